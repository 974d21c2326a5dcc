"""``--shard I/N`` (tests/shards.py, tests/conftest.py): the shards partition the files, and LPT balances them."""

import itertools
import subprocess
import sys

import pytest

import shards


def _loads(shard_of, cost, count):
    loads = [0.0] * count
    for f, s in shard_of.items():
        loads[s] += cost[f]
    return loads


def test_every_file_lands_in_exactly_one_shard_and_the_split_is_deterministic():
    cost = {f"tests/test_{i}.py": float((i * 37) % 23) for i in range(40)}
    first = shards.assign(cost, 3)
    assert set(first) == set(cost) and set(first.values()) == {0, 1, 2}
    assert shards.assign(dict(reversed(list(cost.items()))), 3) == first


def test_the_split_is_within_four_thirds_of_the_best_split_found_by_brute_force():
    cost = {"a": 9.0, "b": 7.0, "c": 6.0, "d": 5.0, "e": 5.0, "f": 4.0, "g": 2.0}
    shard_of = shards.assign(cost, 2)
    best = min(max(sum(cost[f] for f, s in zip(cost, pick) if s == k) for k in (0, 1))
               for pick in itertools.product((0, 1), repeat=len(cost)))
    assert best == 19.0  # 38 s in all: {a, b, ...} splits evenly (a+d+e = 19)
    assert max(_loads(shard_of, cost, 2)) <= best * 4 / 3


def test_a_file_costs_its_selected_tests_and_an_unmeasured_test_5_ms():
    tests = {"tests/test_big.py": [f"tests/test_big.py::t{i}" for i in range(6000)],
             "tests/test_a.py": ["tests/test_a.py::slow", "tests/test_a.py::quick"],
             "tests/test_b.py": ["tests/test_b.py::x"]}
    durations = {"tests/test_a.py::slow": 20.0, "tests/test_a.py::quick": 0.25, "tests/test_b.py::x": 20.0,
                 "tests/test_a.py::deselected": 500.0}
    cost = shards.file_costs(tests, durations)
    assert cost == pytest.approx({"tests/test_big.py": 30.0, "tests/test_a.py": 20.25, "tests/test_b.py": 20.0})
    shard_of = shards.assign(cost, 2)
    # 6000 unmeasured tests (30 s) outweigh either measured file, so they get a shard of their own
    assert shard_of["tests/test_a.py"] == shard_of["tests/test_b.py"] != shard_of["tests/test_big.py"]


@pytest.mark.parametrize("text", ["2/2", "0/0", "1", "a/b", "-1/2"])
def test_a_bad_shard_is_refused_by_name(text):
    with pytest.raises(ValueError, match="--shard"):
        shards.parse_shard(text)


def test_the_shards_of_pytest_together_collect_each_test_once():
    """Two real collections of this module's neighbours with --shard 0/2 and 1/2 split them without overlap."""
    files = ["tests/test_jsonl.py", "tests/test_quantiles.py", "tests/test_shards.py"]
    ids = []
    for index in (0, 1):
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                              f"--shard={index}/2", *files], capture_output=True, text=True, timeout=120)
        assert out.returncode in (0, 5), out.stdout + out.stderr
        ids.append({line for line in out.stdout.splitlines() if "::" in line})
    whole = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", *files],
                           capture_output=True, text=True, timeout=120)
    assert ids[0].isdisjoint(ids[1])
    assert ids[0] | ids[1] == {line for line in whole.stdout.splitlines() if "::" in line}
    assert ids[0] and ids[1]


def test_a_bad_shard_option_stops_pytest_with_its_message():
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                          "--shard=3/2", "tests/test_jsonl.py"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "--shard '3/2'" in out.stderr + out.stdout
