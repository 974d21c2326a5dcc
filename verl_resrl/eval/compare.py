"""``python -m verl_resrl.eval.compare``: one table and one Pass@k plot for several finished eval runs.

Example (the paper's comparison)::

    python -m verl_resrl.eval.compare GRPO=out/grpo NSR=out/nsr ResRL=out/resrl --out out/compare

Each ``LABEL=DIR`` names the ``output_dir`` of an earlier ``python -m verl_resrl.eval`` run (its results.json).
Writes ``results.md``, ``results.json``, ``pass_at_k.png`` and ``pass_at_k_{benchmark}.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys

from verl_resrl.eval.report import load_run, write_json, write_reports


def parse_runs(items: list[str]) -> dict[str, str]:
    """LABEL=DIR pairs in the order given; labels must be unique."""
    runs: dict[str, str] = {}
    for item in items:
        label, sep, directory = item.partition("=")
        if not sep or not label or not directory:
            raise SystemExit(f"expected LABEL=DIR, got {item!r}")
        if label in runs:
            raise SystemExit(f"run label {label!r} given twice")
        runs[label] = directory
    return runs


def main(argv: list[str] | None = None) -> int:
    """Load each run's results.json and write the combined reports."""
    parser = argparse.ArgumentParser(prog="python -m verl_resrl.eval.compare", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=DIR of finished eval runs")
    parser.add_argument("--out", required=True, help="folder for the combined table and plots")
    args = parser.parse_args(argv)
    runs = {label: load_run(directory) for label, directory in parse_runs(args.runs).items()}
    os.makedirs(args.out, exist_ok=True)
    write_json({"runs": runs}, os.path.join(args.out, "results.json"))
    paths = write_reports(runs, args.out)
    print(open(paths["table"]).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
