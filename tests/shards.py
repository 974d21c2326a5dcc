"""Split the suite's test files into N shards of about equal run time (``pytest --shard I/N``, tests/conftest.py).

Whole files go to one shard, so a module's fixtures (a tiny build, a fresh verl process) are set up once. The time of
a file is its measured seconds in ``tests/durations.json`` (written by ``benchmarks/test_durations.py`` from a JUnit
report); a file not in it counts ``UNKNOWN_S_PER_TEST`` a test. Files are placed longest first, each on the shard
with the least time so far (LPT scheduling: within 4/3 of the best possible split), ties broken by name, so every
process computes the same split from the same collection.
"""

from __future__ import annotations

import json
import os

DURATIONS_FILE = os.path.join(os.path.dirname(__file__), "durations.json")
UNKNOWN_S_PER_TEST = 1.0


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
    """Measured seconds per test file (an empty dict when the file is missing)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {str(k): float(v) for k, v in json.load(f)["seconds_per_file"].items()}


def assign(tests_per_file: dict[str, int], durations: dict[str, float], count: int) -> dict[str, int]:
    """Each file -> its shard in [0, count), longest file first onto the least-loaded shard."""
    cost = {f: durations.get(f, UNKNOWN_S_PER_TEST * n) for f, n in tests_per_file.items()}
    load = [0.0] * count
    shard_of = {}
    for f in sorted(cost, key=lambda f: (-cost[f], f)):
        target = min(range(count), key=lambda s: (load[s], s))
        shard_of[f] = target
        load[target] += cost[f]
    return shard_of
