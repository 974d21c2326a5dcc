#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and installs verl_resrl into it.
# CPU machine: torch 2.13.0 (CPU build) FIRST, then verl==0.9.1 without extras (its extras pin a CUDA torch).
# GPU machine (nvidia-smi lists a GPU): the CUDA stack with vLLM and flash-attn through the `gpu` extra.
# Idempotent: a stamp holding the hash of setup.py skips the install when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VERL_RESRL_VENV:-$root/.venv}"
log="$venv/install.log"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
mkdir -p "$venv"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
  flavour=gpu
else
  flavour=cpu
fi
stamp="$venv/.verl_resrl-$flavour-$(sha1sum "$root/setup.py" | cut -c1-12)"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "setting up $venv ($flavour; log: $log)" >&2
pip_install() { "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" >>"$log" 2>&1 || {
  tail -n 40 "$log" >&2; echo "pip install $* failed (full log: $log)" >&2; exit 1; }; }
pip_install --upgrade pip setuptools wheel
if [ "$flavour" = cpu ]; then
  pip_install torch==2.13.0
  pip_install -e "$root[test]"
else
  pip_install -e "$root[test,gpu]"
fi
rm -f "$venv"/.verl_resrl-*
touch "$stamp"
