#!/usr/bin/env bash
# flash-attn for the GPU flavour, from a prebuilt wheel only: never a compile, never a silent skip.
#
#   VERL_RESRL_FLASH_ATTN_WHEEL=/path/or/URL/flash_attn-2.8.3+cu13torch2.11cxx11abiTRUE-cp311-cp311-linux_x86_64.whl \
#     bash launch/install_flash_attn.sh [VENV]
#
# Called by launch/setup_env.sh after torch is installed. The package index has only flash-attn's source archive
# (building it needs torch inside pip's isolated build and then nvcc for hours), so the wheel comes from the user:
#   VERL_RESRL_FLASH_ATTN_WHEEL=PATH|URL  a wheel built for this venv's torch, CUDA, Python and C++ ABI (the
#                                         flash-attn GitHub releases publish them; or your site's wheel cache);
#                                         installed with --no-deps --no-build-isolation --only-binary=:all:
#   VERL_RESRL_FLASH_ATTN_WHEEL=none      go without flash-attn: then run the recipes with
#                                         actor_rollout_ref.model.override_config.attn_implementation=sdpa
#                                         (verl 0.9.1 defaults to flash_attention_2; docs/install.md)
#   unset                                 keep a flash-attn already installed in the venv (checked by importing
#                                         it), else fail naming the wheel to get.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${VERL_RESRL_VENV:-$root/.venv}}"
py="$venv/bin/python"
want="$(sed -n 's/^FLASH_ATTN_VERSION = "\([^"]*\)".*/\1/p' "$root/setup.py")"
wheel="${VERL_RESRL_FLASH_ATTN_WHEEL:-}"

# The tags a matching wheel must carry, read from the torch in this venv.
if ! tags="$("$py" -c 'import sys, torch
cuda = torch.version.cuda
if cuda is None:
    sys.exit("torch %s in this venv is a CPU build: flash-attn needs the CUDA torch of the gpu extra" % torch.__version__)
t = ".".join(torch.__version__.split("+")[0].split(".")[:2])
abi = "TRUE" if torch._C._GLIBCXX_USE_CXX11_ABI else "FALSE"
py = "cp%d%d" % sys.version_info[:2]
print("torch %s, CUDA %s, %s, cxx11abi %s -> +cu%storch%scxx11abi%s-%s-%s-linux_x86_64" % (
    torch.__version__, cuda, py, abi, cuda.split(".")[0], t, abi, py, py))' 2>&1)"; then
  echo "install_flash_attn: $tags" >&2
  exit 1
fi
need="flash-attn $want for ${tags%% ->*}: a wheel named flash_attn-$want${tags##*-> }.whl"

if [ "$wheel" = none ]; then
  echo "install_flash_attn: VERL_RESRL_FLASH_ATTN_WHEEL=none: no flash-attn. Run the recipes with" \
       "actor_rollout_ref.model.override_config.attn_implementation=sdpa (verl's default is flash_attention_2)" >&2
  exit 0
fi
if [ -z "$wheel" ]; then
  if have="$("$py" -c 'import flash_attn; print(flash_attn.__version__)' 2>/dev/null)"; then
    echo "install_flash_attn: flash-attn $have already installed in $venv (imports with this torch)" >&2
    exit 0
  fi
  echo "install_flash_attn: flash-attn is not installed and cannot be built here. Install $need" >&2
  echo "  (from the flash-attn GitHub releases or your site's wheel cache), then rerun with" >&2
  echo "  VERL_RESRL_FLASH_ATTN_WHEEL=/path/to/that.whl (a path or URL), or VERL_RESRL_FLASH_ATTN_WHEEL=none to go" >&2
  echo "  without it (then actor_rollout_ref.model.override_config.attn_implementation=sdpa). See docs/install.md." >&2
  exit 1
fi
case "$wheel" in
  *.whl) ;;
  *) echo "install_flash_attn: VERL_RESRL_FLASH_ATTN_WHEEL=$wheel is not a .whl file: only a prebuilt wheel is" \
          "installed (never a source build). Needed: $need" >&2; exit 1 ;;
esac
"$py" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --only-binary=:all: "$wheel" || {
  echo "install_flash_attn: pip could not install $wheel (above). Needed: $need" >&2; exit 1; }
if ! err="$("$py" -c 'import flash_attn, flash_attn_2_cuda; print(flash_attn.__version__)' 2>&1)"; then
  echo "install_flash_attn: $wheel installed but does not load with this torch (wrong torch/CUDA/ABI build?):" >&2
  echo "  ${err##*$'\n'}. Needed: $need" >&2
  exit 1
fi
echo "install_flash_attn: flash-attn $err installed from $wheel" >&2
