"""Write tests/durations.json, the measured seconds per test file that ``--shard I/N`` balances by (tests/shards.py).

    python -m pytest -m "not e2e and not serial" --junitxml=/tmp/a.xml ...   # one or more JUnit reports
    python benchmarks/test_durations.py /tmp/a.xml [/tmp/b.xml ...] --cpu "AMD EPYC, AVX2, 2 cores"

Each test's time (call + set-up + tear-down, as JUnit records it) is added to its file's; a file in several reports
keeps the largest sum. The file only steers how the fast tier's halves are balanced: a stale or missing entry costs
time, never a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import shards  # noqa: E402


def seconds_per_file(report: str) -> dict[str, float]:
    """Summed test time per test file of one JUnit report (file from the classname ``tests.test_x.Class``)."""
    totals: dict[str, float] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        # classname is "tests.test_x" or "tests.test_x.TestClass": the file is the first part named test_*
        name = next((part for part in module if part.startswith("test_")), None)
        if name is None:
            raise ValueError(f"{report}: a testcase's classname {case.get('classname')!r} names no test_ module")
        path = f"tests/{name}.py"
        totals[path] = totals.get(path, 0.0) + float(case.get("time", 0.0))
    return totals


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+")
    parser.add_argument("--cpu", required=True, help="the machine the reports were measured on")
    args = parser.parse_args(argv)
    merged: dict[str, float] = {}
    for report in args.reports:
        for path, seconds in seconds_per_file(report).items():
            merged[path] = max(merged.get(path, 0.0), seconds)
    out = {"measured_on": args.cpu, "date": datetime.date.today().isoformat(),
           "seconds_per_file": {k: round(v, 1) for k, v in sorted(merged.items())}}
    with open(shards.DURATIONS_FILE, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"{len(merged)} files, {sum(merged.values()):.0f} s in all -> {shards.DURATIONS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
