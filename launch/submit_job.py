#!/usr/bin/env python3
"""Submit one training run to a running Ray cluster with `ray job submit`.

    python launch/submit_job.py --recipe resrl_math [--address http://HEAD:8265] [--no-wait] -- data.data_dir=DIR

The job's runtime environment:
  * working_dir: this repository without the package sources (and without .venv, .git, checkpoints, logs), uploaded
    by Ray to every node: the job's working directory (scripts, docs, relative output paths). The package folders
    are left out because a plain `verl_resrl/` folder in the working directory would shadow the mapped layout;
  * the code of this checkout, one of (`--install`):
      py_modules (default): the package as setup.py lays it out (verl_resrl/ with recipes/ -> verl_resrl/recipe,
        workers/, rewards/ mapped under it), staged in a temp dir and shipped as a Ray py_module: first on the path
        of every Ray process of the job, whatever the nodes have installed;
      none: use what the nodes have installed (this exact checkout, e.g. on a shared filesystem);
    the nodes' Python must hold torch, verl==0.9.1 and vLLM (`bash launch/setup_env.sh`). `--pip REQ` adds a
    requirement (Ray then builds a per-job virtualenv; from a node running in a virtualenv it clones that one);
  * env_vars: VERL_USE_EXTERNAL_MODULES=verl_resrl.plugin (verl imports our plugin in every process - the shipped
    py_module has no entry point - and, unlike entry-point loading, fails loudly if that import breaks), and the
    logging/secrets variables copied from THIS shell when set (WANDB_API_KEY, WANDB_MODE, ...; never from a file).
    `--env KEY` / `--env KEY=VALUE` adds more.

Only the standard library is used here; the `ray` CLI must be on PATH (or pass --ray).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Copied from the submitting shell when set. Secrets travel in the job's runtime env (visible to whoever can read
# the cluster's job table): prefer exporting them on the nodes before `ray start` where that matters.
PASS_THROUGH_ENV = (
    "WANDB_API_KEY", "WANDB_MODE", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_DIR", "WANDB_BASE_URL",
    "TENSORBOARD_DIR", "HF_TOKEN", "HF_HOME", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
)
SECRET_ENV = ("WANDB_API_KEY", "HF_TOKEN")
# setup.py's package_dir mapping (tests/test_ray_job.py checks the two agree): folder -> path under verl_resrl/
MAPPED_FOLDERS = {"recipes": "recipe", "workers": "workers", "rewards": "rewards"}
EXCLUDES = [
    ".git", ".venv", "**/__pycache__", "checkpoints", "outputs", "multirun", "tensorboard_log", "wandb",
    "*.egg-info", "build", "dist", ".pytest_cache",
]
PACKAGE_SOURCES = ["verl_resrl", "recipes", "workers", "rewards"]  # shipped as the py_module, not in working_dir


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


def stage_package(repo: str, dest: str) -> str:
    """Copy the package into ``dest`` in its installed layout (setup.py's mapping); returns ``dest/verl_resrl``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    root = os.path.join(dest, "verl_resrl")
    shutil.copytree(os.path.join(repo, "verl_resrl"), root, ignore=ignore)
    for folder, sub in MAPPED_FOLDERS.items():
        shutil.copytree(os.path.join(repo, folder), os.path.join(root, sub), ignore=ignore)
    return root


def runtime_env(args, environ: dict, staging_dir: str | None = None) -> dict:
    """The runtime_env dict passed to `ray job submit --runtime-env-json`."""
    excludes = EXCLUDES + [f"/{folder}" for folder in PACKAGE_SOURCES]
    env = {"working_dir": args.working_dir, "excludes": excludes, "env_vars": parse_env(args.env, environ)}
    if args.install == "py_modules":
        env["py_modules"] = [stage_package(args.working_dir, staging_dir or tempfile.mkdtemp(prefix="resrl_job_"))]
    if args.pip:
        env["pip"] = list(args.pip)
    return env


def build_command(args, environ: dict, staging_dir: str | None = None) -> tuple[list[str], dict]:
    """The `ray job submit ...` argv and its runtime env."""
    env = runtime_env(args, environ, staging_dir)
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
    parser.add_argument("--install", choices=["py_modules", "none"], default="py_modules",
                        help="how this checkout's code reaches the nodes (see the module docstring)")
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
    with tempfile.TemporaryDirectory(prefix="resrl_job_") as staging:  # uploaded by `ray job submit`, then removed
        cmd, env = build_command(args, dict(os.environ), staging)
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
