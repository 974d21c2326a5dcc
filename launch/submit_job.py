#!/usr/bin/env python3
"""Submit one training run to a running Ray cluster with `ray job submit`.

    python launch/submit_job.py --recipe resrl_math [--address http://HEAD:8265] [--no-wait] -- data.data_dir=/shared/data

The job's runtime environment:
  * working_dir: this repository (without .venv, .git, checkpoints, logs), uploaded by Ray to every node;
  * pip: the uploaded working dir itself, installed with --no-deps into a per-job virtualenv layered over the node's
    Python (which must already hold torch, verl==0.9.1, vLLM: `bash launch/setup_env.sh`), so that the recipe
    group, the `verl.plugins` entry point and the mapped packages exist on every node (`--install none` skips
    this when the nodes share an installed checkout), plus any `--pip REQ`;
  * env_vars: VERL_USE_EXTERNAL_MODULES=verl_resrl.plugin (verl imports our plugin in every process and, unlike the
    entry point, fails loudly if that import breaks), and the logging/secrets variables copied from THIS shell when
    set (WANDB_API_KEY, WANDB_MODE, ...; never from a file). `--env KEY` / `--env KEY=VALUE` adds more.

Only the standard library is used here; the `ray` CLI must be on PATH (or pass --ray).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Copied from the submitting shell when set. Secrets travel in the job's runtime env (visible to whoever can read
# the cluster's job table): prefer exporting them on the nodes before `ray start` where that matters.
PASS_THROUGH_ENV = (
    "WANDB_API_KEY", "WANDB_MODE", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_DIR", "WANDB_BASE_URL",
    "TENSORBOARD_DIR", "HF_TOKEN", "HF_HOME", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
)
SECRET_ENV = ("WANDB_API_KEY", "HF_TOKEN")
EXCLUDES = [
    ".git", ".venv", "**/__pycache__", "checkpoints", "outputs", "multirun", "tensorboard_log", "wandb",
    "*.egg-info", "build", "dist", ".pytest_cache",
]


def parse_env(items: list[str], environ: dict) -> dict[str, str]:
    """Env vars of the job: the pass-through list, then --env KEY (copied) or KEY=VALUE items."""
    env = {"VERL_USE_EXTERNAL_MODULES": "verl_resrl.plugin"}
    env.update({k: environ[k] for k in PASS_THROUGH_ENV if environ.get(k)})
    for item in items:
        key, sep, value = item.partition("=")
        if not key or not key.replace("_", "").isalnum():
            raise SystemExit(f"--env expects KEY or KEY=VALUE, got {item!r}")
        if sep:
            env[key] = value
        elif key in environ:
            env[key] = environ[key]
        else:
            raise SystemExit(f"--env {key}: not set in this shell")
    return env


def runtime_env(args, environ: dict) -> dict:
    """The runtime_env dict passed to `ray job submit --runtime-env-json`."""
    packages = list(args.pip)
    if args.install == "working_dir":
        # Ray expands this variable to the working dir's path on each node before running pip (runtime_env docs).
        packages.insert(0, "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}")
    env = {"working_dir": args.working_dir, "excludes": EXCLUDES, "env_vars": parse_env(args.env, environ)}
    if packages:
        options = ["--disable-pip-version-check", "--no-cache-dir", "--no-deps"]
        if args.install == "working_dir":
            options.append("--no-build-isolation")  # setuptools from the node's Python: no index needed
        env["pip"] = {"packages": packages, "pip_install_options": options}
    return env


def build_command(args, environ: dict) -> tuple[list[str], dict]:
    """The `ray job submit ...` argv and its runtime env."""
    env = runtime_env(args, environ)
    cmd = [args.ray, "job", "submit", "--address", args.address, "--runtime-env-json", json.dumps(env)]
    if args.submission_id:
        cmd += ["--submission-id", args.submission_id]
    if args.no_wait:
        cmd.append("--no-wait")
    entry = [args.python, "-m", "verl_resrl.main_ppo", f"+recipe={args.recipe}", *args.overrides]
    return cmd + ["--"] + entry, env


def masked(cmd: list[str], env: dict) -> str:
    """The command as text with secret values replaced, for printing."""
    shown = json.loads(json.dumps(env))
    for key in SECRET_ENV:
        if key in shown["env_vars"]:
            shown["env_vars"][key] = "***"
    text = [json.dumps(shown) if part.startswith("{") else part for part in cmd]
    return shlex.join(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options; everything after `--` is passed to Hydra as overrides."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="recipe name (recipes/NAME.yaml), e.g. resrl_math")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"),
                        help="Ray dashboard address (default: $RAY_ADDRESS or http://127.0.0.1:8265)")
    parser.add_argument("--working-dir", default=REPO, help="uploaded to the cluster (default: this repository)")
    parser.add_argument("--install", choices=["working_dir", "none"], default="working_dir",
                        help="install the uploaded working dir into the job's env (default) or rely on the nodes")
    parser.add_argument("--pip", action="append", default=[], help="extra pip requirement (repeatable)")
    parser.add_argument("--env", action="append", default=[], help="KEY (copied from this shell) or KEY=VALUE")
    parser.add_argument("--python", default="python", help="interpreter of the entrypoint on the head node")
    parser.add_argument("--ray", default="ray", help="the ray CLI")
    parser.add_argument("--submission-id", default=None)
    parser.add_argument("--no-wait", action="store_true", help="return after submitting (default: follow the logs)")
    parser.add_argument("--dry-run-first", action="store_true",
                        help="run the dry run locally (needs the data files here) before submitting")
    parser.add_argument("--print-only", action="store_true", help="print the command, submit nothing")
    if "--" in argv:
        split = argv.index("--")
        args = parser.parse_args(argv[:split])
        args.overrides = argv[split + 1:]
    else:
        args = parser.parse_args(argv)
        args.overrides = []
    return args


def main(argv: list[str] | None = None) -> int:
    """Build the command, optionally dry-run it locally, then submit; returns `ray job submit`'s exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cmd, env = build_command(args, dict(os.environ))
    print(masked(cmd, env), flush=True)
    if args.print_only:
        return 0
    if args.dry_run_first:
        check = [sys.executable, "-m", "verl_resrl.main_ppo", f"+recipe={args.recipe}", *args.overrides,
                 "trainer.dry_run=true"]
        if subprocess.call(check) != 0:
            print("dry run failed: nothing submitted", file=sys.stderr)
            return 2
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
