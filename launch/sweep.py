#!/usr/bin/env python3
"""Run a Hydra sweep as separate Ray jobs: one `ray job submit` per point of the grid.

    python launch/sweep.py --recipe resrl_math --address http://HEAD:8265 -- \\
        algorithm.resrl.min_weight=0.05,0.1,0.2 algorithm.resrl.pos_weight=0.1,0.5 algorithm.resrl.rank=16,64

The overrides use Hydra's own sweep syntax (`a=1,2`, `a=range(1,4)`, `a=choice(x,y)`), expanded by Hydra's
BasicSweeper into the same grid `python -m verl_resrl.main_ppo -m ...` would run, but each point becomes its own Ray
job (`launch/submit_job.py`, submitted with --no-wait) so the jobs share the cluster instead of running one after
another in one process. Each point gets its own trainer.experiment_name (recipe name + swept values), hence its own
checkpoint folder: with resume_mode=auto, points must not share one, or they would resume each other's checkpoints.

`--dry-run-first` validates every point locally (no Ray) before anything is submitted; `--print-only` prints the
commands. Runs with the project's Python (it needs hydra-core); submission itself goes through the `ray` CLI.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import submit_job  # noqa: E402  - the sibling script, importable without installing launch/


def expand_grid(overrides: list[str]) -> list[list[str]]:
    """Hydra's expansion of sweep overrides into one override list per run (BasicSweeper's cartesian product)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides=overrides)
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


def point_name(prefix: str, point: list[str], swept: set[str]) -> str:
    """A readable, path-safe experiment name: the prefix plus KEY-VALUE of every swept key."""
    parts = [prefix]
    for item in point:
        key, _, value = item.partition("=")
        if key.lstrip("+~") in swept:
            parts.append(f"{key.rsplit('.', 1)[-1]}-{value}")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts))


def swept_keys(overrides: list[str]) -> set[str]:
    """Keys whose override is a sweep (more than one value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides=overrides)
    return {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Sweep options before `--`, Hydra overrides (sweep syntax allowed) after it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"))
    parser.add_argument("--dry-run-first", action="store_true", help="dry-run every point locally before submitting")
    parser.add_argument("--print-only", action="store_true", help="print the commands, submit nothing")
    parser.add_argument("--submit-arg", action="append", default=[],
                        help="extra option for submit_job.py, e.g. --submit-arg=--install=none (repeatable)")
    split = argv.index("--") if "--" in argv else len(argv)
    return parser.parse_args(argv[:split]), argv[split + 1:]


def _dry_run(recipe: str, point: list[str]) -> bool:
    """The local dry run of one point (exit status 0 means valid)."""
    cmd = [sys.executable, "-m", "verl_resrl.main_ppo", f"+recipe={recipe}", *point, "trainer.dry_run=true"]
    return subprocess.call(cmd, stdout=subprocess.DEVNULL) == 0


def main(argv: list[str] | None = None) -> int:
    """Expand the grid, optionally validate each point, then submit one Ray job per point."""
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    grid = expand_grid(overrides)
    swept = swept_keys(overrides)
    print(f"{len(grid)} run(s) over {sorted(swept) or 'no swept key'}", flush=True)
    # a fixed trainer.experiment_name becomes the prefix of every point's name (Hydra refuses a key given twice)
    prefix = args.recipe
    for point in grid:
        fixed = [item for item in point if item.startswith("trainer.experiment_name=")]
        for item in fixed:
            prefix = item.partition("=")[2]
            point.remove(item)
    names = [point_name(prefix, point, swept) for point in grid]
    if args.dry_run_first:
        bad = [name for name, point in zip(names, grid) if not _dry_run(args.recipe, point)]
        if bad:
            print(f"dry run failed for {bad}: nothing submitted", file=sys.stderr)
            return 2
    status = 0
    for name, point in zip(names, grid):
        job = ["--recipe", args.recipe, "--address", args.address, "--no-wait", *args.submit_arg]
        job += ["--print-only"] if args.print_only else []
        status |= submit_job.main(job + ["--", *point, f"trainer.experiment_name={name}"])
    return status


if __name__ == "__main__":
    sys.exit(main())
