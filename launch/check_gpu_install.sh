#!/usr/bin/env bash
# Does the `gpu` install resolve? Runs pip's resolver over `verl_resrl[gpu]` in dry-run/report mode (nothing is
# installed) in a throw-away venv, prints the resolved stack and exits non-zero on a conflict. Runs on a CPU machine.
#
#   bash launch/check_gpu_install.sh [REPORT_JSON]       # ~3 min; downloads a few hundred MB of wheel metadata
#
# The target is the GPU nodes' platform: Linux x86-64, CPython 3.11 (CUDA comes from the nvidia-* wheels torch pulls
# in). pip resolves for the host it runs on, so this host must be that platform too; the script refuses otherwise.
# flash-attn is not part of the resolution (no wheel on the package index: docs/install.md); with
# VERL_RESRL_FLASH_ATTN_WHEEL=PATH|URL set, that wheel joins the dry run and its version is checked.
# Not part of the test suite (it downloads): tests/test_gpu_install.py checks the committed output against setup.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3.11}"
report_out="${1:-}"

read -r os arch pyver < <("$python" -c 'import platform, sys; print(platform.system(), platform.machine(),
  "%d.%d" % sys.version_info[:2])')
if [ "$os $arch $pyver" != "Linux x86_64 3.11" ]; then
  echo "check_gpu_install: this host is $os $arch Python $pyver; the target is Linux x86_64 Python 3.11" >&2
  echo "(pip resolves for the host it runs on; set PYTHON=python3.11 on a Linux x86-64 machine)" >&2
  exit 2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip >/dev/null
extra=()
[ -n "${VERL_RESRL_FLASH_ATTN_WHEEL:-}" ] && extra+=("$VERL_RESRL_FLASH_ATTN_WHEEL")
echo "pip $("$work/venv/bin/python" -m pip --version | cut -d' ' -f2): resolving $root[gpu] ${extra[*]:-} for" \
  "Linux x86_64 CPython 3.11 (dry run)" >&2
start=$(date +%s)
if ! "$work/venv/bin/python" -m pip install --dry-run --ignore-installed --quiet --report "$work/report.json" \
    "$root[gpu]" "${extra[@]}" >"$work/pip.log" 2>&1; then
  tail -n 40 "$work/pip.log" >&2
  echo "check_gpu_install: pip could not resolve the gpu extra (above: pip's own message)" >&2
  exit 1
fi
echo "resolved in $(( $(date +%s) - start )) s" >&2
[ -n "$report_out" ] && cp "$work/report.json" "$report_out"
# The summary: the stack the issue names, then every pin of setup.py's GPU_STACK compared with what was resolved.
"$work/venv/bin/python" - "$work/report.json" "$root/setup.py" <<'PY'
import ast, json, re, sys

report = json.load(open(sys.argv[1]))
resolved = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
            for item in report["install"]}
tree = ast.parse(open(sys.argv[2]).read())
consts = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body
          if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") in ("GPU_STACK", "FLASH_ATTN_VERSION")}
print(f"resolved {len(resolved)} packages for Linux x86_64 CPython 3.11 (pip {report.get('pip_version')})")
for name in ("verl", "torch", "vllm", "transformers", "flash-attn", "torchvision", "torchaudio", "triton",
             "flashinfer-python", "ray", "numpy", "tensordict", "nvidia-cuda-runtime", "wandb"):
    print(f"  {name:20s} {resolved.get(name, '(not in the resolution)')}")
cuda = sorted(f"{n} {v}" for n, v in resolved.items() if n.startswith("nvidia-cuda-runtime"))
print(f"  CUDA runtime wheel   {', '.join(cuda) or '(none)'}")
bad = []
for req in consts["GPU_STACK"]:
    name, version = re.match(r"([A-Za-z0-9_.-]+)(?:\[.*\])?==(.+)", req).groups()
    got = resolved.get(name.lower())
    print(f"  pin {req:24s} -> {got}")
    if got != version:
        bad.append(f"{req} resolved to {got}")
if "flash-attn" in resolved and resolved["flash-attn"] != consts["FLASH_ATTN_VERSION"]:
    bad.append(f"flash-attn {resolved['flash-attn']} (setup.py's FLASH_ATTN_VERSION is {consts['FLASH_ATTN_VERSION']})")
elif "flash-attn" not in resolved:
    print(f"  flash-attn {consts['FLASH_ATTN_VERSION']}: not resolvable from the index (source archive only); "
          "installed by setup_env.sh from VERL_RESRL_FLASH_ATTN_WHEEL (docs/install.md)")
if bad:
    sys.exit("check_gpu_install: the resolution differs from setup.py's pins: " + "; ".join(bad))
print("no conflict: the gpu extra resolves to setup.py's pins")
PY
