#!/usr/bin/env bash
# Join this node to the Ray cluster whose head runs launch/ray_head.sh.
#
#   NUM_GPUS=8 bash launch/ray_worker.sh HEAD_IP:6379      (RAY_BLOCK=1: stay in the foreground)
#
# Same environment as ray_head.sh (NODE_IP, NUM_GPUS, NUM_CPUS, RAY_TEMP_DIR, RAY_BLOCK, RAY_AUTH_TOKEN, secrets).
set -euo pipefail
if [ $# -lt 1 ]; then echo "usage: $0 HEAD_IP:PORT [extra ray start options]" >&2; exit 2; fi
head="$1"; shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VERL_RESRL_VENV:-$root/.venv}"
node_ip="${NODE_IP:-$(hostname -I | awk '{print $1}')}"
num_gpus="${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)}"
args=(start --address "$head" --node-ip-address "$node_ip" --num-gpus "${num_gpus:-0}" --disable-usage-stats)
[ -n "${NUM_CPUS:-}" ] && args+=(--num-cpus "$NUM_CPUS")
[ -n "${RAY_TEMP_DIR:-}" ] && args+=(--temp-dir "$RAY_TEMP_DIR")
[ "${RAY_BLOCK:-0}" = 1 ] && args+=(--block)
[ -n "${RAY_AUTH_TOKEN:-}" ] && export RAY_AUTH_MODE=token
export VERL_USE_EXTERNAL_MODULES="${VERL_USE_EXTERNAL_MODULES:-verl_resrl.plugin}"
# `python` in a Ray job's entrypoint is looked up on the PATH of the node's Ray processes: the project venv's.
export PATH="$venv/bin:$PATH"
echo "ray worker $node_ip -> $head (${num_gpus:-0} GPU(s))" >&2
exec "$venv/bin/ray" "${args[@]}" "$@"
