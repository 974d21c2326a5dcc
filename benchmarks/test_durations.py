"""Write tests/durations.json, the measured seconds per test file that ``--shard I/N`` balances by (tests/shards.py).

    python -m pytest -m "not e2e and not serial" --junitxml=/tmp/a.xml ...   # JUnit reports (*.xml), or
    bash launch/run_tests.sh --fast --durations=0 > /tmp/fast.log            # pytest's --durations=0 lines in a log
    python benchmarks/test_durations.py /tmp/a.xml [/tmp/fast.log ...] --cpu "AMD EPYC, AVX2, 2 cores"

Each test's time is its call + set-up + tear-down; a test in several reports keeps the largest. The file only steers how the fast tier's halves are balanced: a stale or missing entry costs
time, never a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import shards  # noqa: E402


def seconds_per_test(report: str) -> dict[str, float]:
    """Time per test id of one JUnit report (the file from the classname ``tests.test_x[.Class]``)."""
    totals: dict[str, float] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        # classname is "tests.test_x" or "tests.test_x.TestClass": the file is the first part named test_*
        name = next((part for part in module if part.startswith("test_")), None)
        if name is None:
            raise ValueError(f"{report}: a testcase's classname {case.get('classname')!r} names no test_ module")
        cls = module[module.index(name) + 1:]
        nodeid = "::".join([f"tests/{name}.py", *cls, case.get("name", "")])
        totals[nodeid] = totals.get(nodeid, 0.0) + float(case.get("time", 0.0))
    return totals


DURATION_LINE = re.compile(r"^(\d+(?:\.\d+)?)s (?:call|setup|teardown)\s+(tests/\S+\.py::\S+)")


def seconds_per_test_from_log(log: str) -> dict[str, float]:
    """Time per test id from the ``--durations=0`` lines of a pytest log."""
    totals: dict[str, float] = {}
    with open(log, errors="replace") as f:
        for line in f:
            match = DURATION_LINE.match(line)
            if match:
                totals[match.group(2)] = totals.get(match.group(2), 0.0) + float(match.group(1))
    if not totals:
        raise ValueError(f"{log}: no '--durations=0' lines (e.g. '1.23s call     tests/test_x.py::name')")
    return totals


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+")
    parser.add_argument("--cpu", required=True, help="the machine the reports were measured on")
    args = parser.parse_args(argv)
    merged: dict[str, float] = {}
    for report in args.reports:
        read = seconds_per_test if report.endswith(".xml") else seconds_per_test_from_log
        for path, seconds in read(report).items():
            merged[path] = max(merged.get(path, 0.0), seconds)
    out = {"measured_on": args.cpu, "date": datetime.date.today().isoformat(),
           "seconds_per_test": {k: round(v, 2) for k, v in sorted(merged.items())}}
    with open(shards.DURATIONS_FILE, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    files = {k.split("::", 1)[0] for k in merged}
    print(f"{len(merged)} tests in {len(files)} files, {sum(merged.values()):.0f} s in all -> {shards.DURATIONS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
