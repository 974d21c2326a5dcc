"""``--shard I/N``: run one of N parts of the collected tests, whole files at a time (tests/shards.py).

``launch/run_tests.sh --fast`` runs the fast tier as two such shards side by side. What a shard leaves out is
reported as deselected, so the N runs together account for every collected test.
"""

from __future__ import annotations

import pytest

import shards


def pytest_addoption(parser):
    parser.addoption("--shard", default=None, metavar="I/N",
                     help="run shard I of N (0-based), whole test files balanced by tests/durations.json")


def pytest_configure(config):
    text = config.getoption("--shard")
    if text is not None:
        try:
            shards.parse_shard(text)
        except ValueError as err:
            raise pytest.UsageError(str(err)) from None


def pytest_collection_modifyitems(config, items):
    text = config.getoption("--shard")
    if text is None:
        return
    index, count = shards.parse_shard(text)
    file_of = {id(item): item.nodeid.split("::", 1)[0] for item in items}
    tests_by_file: dict[str, list[str]] = {}
    for item in items:
        tests_by_file.setdefault(file_of[id(item)], []).append(item.nodeid)
    shard_of = shards.assign(shards.file_costs(tests_by_file, shards.load_durations()), count)
    kept = [item for item in items if shard_of[file_of[id(item)]] == index]
    dropped = [item for item in items if shard_of[file_of[id(item)]] != index]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept
