"""Split the suite's test files into N shards of about equal run time (``pytest --shard I/N``, tests/conftest.py).

Whole files go to one shard, so a module's fixtures (a tiny build, a fresh verl process) are set up once. The time of
a file is the sum of its selected tests' measured seconds in ``tests/durations.json`` (written by
``benchmarks/test_durations.py``; so a marker that deselects a file's slow tests also takes their time off); a test not
in it counts ``UNKNOWN_S_PER_TEST``: pytest's ``--durations=0`` leaves out tests under 5 ms, so a test missing from a
complete report took less than that (a test added since counts the same until the file is rewritten). Files are placed longest first, each on the shard
with the least time so far (LPT scheduling: within 4/3 of the best possible split), ties broken by name, so every
process computes the same split from the same collection.
"""

from __future__ import annotations

import json
import os

DURATIONS_FILE = os.path.join(os.path.dirname(__file__), "durations.json")
UNKNOWN_S_PER_TEST = 0.005


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; ValueError naming the value otherwise."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard wants I/N with whole numbers, e.g. 0/2; got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: needs N >= 1 and 0 <= I < N")
    return index, count


def load_durations(path: str = DURATIONS_FILE) -> dict[str, float]:
    """Measured seconds per test id (an empty dict when the file is missing)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {str(k): float(v) for k, v in json.load(f)["seconds_per_test"].items()}


def file_costs(tests_by_file: dict[str, list[str]], durations: dict[str, float]) -> dict[str, float]:
    """Each file's expected seconds: its selected tests' measured times, unknown ones at ``UNKNOWN_S_PER_TEST``."""
    return {f: sum(durations.get(t, UNKNOWN_S_PER_TEST) for t in tests) for f, tests in tests_by_file.items()}


def assign(cost: dict[str, float], count: int) -> dict[str, int]:
    """Each file -> its shard in [0, count), longest file first onto the least-loaded shard."""
    load = [0.0] * count
    shard_of = {}
    for f in sorted(cost, key=lambda f: (-cost[f], f)):
        target = min(range(count), key=lambda s: (load[s], s))
        shard_of[f] = target
        load[target] += cost[f]
    return shard_of
