#!/usr/bin/env bash
# Start the Ray head of a (multi-node) cluster on this node; workers join with launch/ray_worker.sh HEAD_IP:PORT.
#
#   NUM_GPUS=8 bash launch/ray_head.sh            # returns once the head is up (RAY_BLOCK=1: stays in foreground)
#
# Environment (all optional):
#   NODE_IP            address the other nodes reach this one at   (default: first of `hostname -I`)
#   RAY_PORT           GCS port                                     (default 6379)
#   RAY_DASHBOARD_PORT dashboard / job-submission port              (default 8265)
#   RAY_DASHBOARD_HOST interface the dashboard listens on           (default 0.0.0.0: reachable from the other nodes)
#   NUM_GPUS, NUM_CPUS resources this node offers                   (default: nvidia-smi's GPU count; Ray's CPU count)
#   RAY_TEMP_DIR       Ray's session/log folder                     (default: Ray's /tmp/ray)
#   RAY_BLOCK=1        stay in the foreground (SLURM, containers)
#   RAY_AUTH_TOKEN     shared cluster token: token authentication is switched on when it is set; export the SAME
#                      value on every node and on the machine that submits jobs. From the environment only.
# Secrets the trainer needs (WANDB_API_KEY, HF_TOKEN) are read from this node's environment by every Ray process
# started here: export them before running this script, never write them into the repository.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VERL_RESRL_VENV:-$root/.venv}"
node_ip="${NODE_IP:-$(hostname -I | awk '{print $1}')}"
num_gpus="${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)}"
args=(start --head --node-ip-address "$node_ip" --port "${RAY_PORT:-6379}"
      --dashboard-host "${RAY_DASHBOARD_HOST:-0.0.0.0}" --dashboard-port "${RAY_DASHBOARD_PORT:-8265}" --include-dashboard true
      --num-gpus "${num_gpus:-0}" --disable-usage-stats)
[ -n "${NUM_CPUS:-}" ] && args+=(--num-cpus "$NUM_CPUS")
[ -n "${RAY_TEMP_DIR:-}" ] && args+=(--temp-dir "$RAY_TEMP_DIR")
[ "${RAY_BLOCK:-0}" = 1 ] && args+=(--block)
[ -n "${RAY_AUTH_TOKEN:-}" ] && export RAY_AUTH_MODE=token
# Every Ray process started from this node imports our verl plugin loudly (verl's entry-point loading hides errors).
export VERL_USE_EXTERNAL_MODULES="${VERL_USE_EXTERNAL_MODULES:-verl_resrl.plugin}"
# `python` in a Ray job's entrypoint is looked up on the PATH of the node's Ray processes: the project venv's.
export PATH="$venv/bin:$PATH"
echo "ray head on $node_ip:${RAY_PORT:-6379} (dashboard :${RAY_DASHBOARD_PORT:-8265}, ${num_gpus:-0} GPU(s))" >&2
exec "$venv/bin/ray" "${args[@]}" "$@"
