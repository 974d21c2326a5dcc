#!/usr/bin/env bash
# The method study (docs/evaluation.md, "Reproducing the paper's comparison"): sets up .venv if needed, then runs
# `python -m verl_resrl.study` (default +study=tiny: 5 methods x 3 seeds of the tiny recipe, the evals, report.md).
# Resumable: rerun the same command after an interruption. Extra arguments are Hydra overrides of the study, e.g.
#   bash launch/run_study.sh out_dir=outputs/study_b seeds=[1,2,3,4,5]
#   bash launch/run_study.sh +study=math dry_run=true        # the cluster form: lists every job
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/launch/setup_env.sh"
venv="${VERL_RESRL_VENV:-$root/.venv}"
cd "$root"
exec "$venv/bin/python" -m verl_resrl.study "$@"
