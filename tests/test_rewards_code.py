"""Code verifier and sandbox: judging rules, options, isolation properties per level, nothing left running."""

import os
import sys
import time
import uuid

import pytest

from verl_resrl.rewards.code import score
from verl_resrl.rewards.sandbox import SandboxLimits, isolation_available, resolve_isolation, run_program
from process_cleanup import assert_nothing_left

ADD = "a, b = map(int, input().split())\nprint(a + b)\n"
TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6"}, {"input": "0 0", "output": "0"}]
NAMESPACE_LEVELS = [lvl for lvl in ("full", "userns") if isolation_available(lvl)]


def test_all_tests_pass():
    assert score(ADD, TESTS) == {"score": 1.0, "answer": "3/3", "reason": "correct"}


def test_wrong_program_stops_at_first_failure():
    out = score("a, b = map(int, input().split())\nprint(a - b)\n", TESTS)
    assert out == {"score": -1.0, "answer": "0/3", "reason": "wrong"}


def test_partial_credit_counts_passed_fraction():
    half_right = "a, b = map(int, input().split())\nprint(a + b if a < 5 else 99)\n"  # passes tests 1 and 3
    assert score(half_right, TESTS, partial_credit=True)["score"] == pytest.approx(2 * (2 / 3) - 1)
    out = score(half_right, TESTS, partial_credit=True, reward_convention="binary")
    assert out["score"] == pytest.approx(2 / 3) and out["answer"] == "2/3" and out["reason"] == "wrong"


def test_output_compared_token_by_token():
    tests = [{"input": "", "output": "1 2\n3\n"}]
    assert score("print('1   2')\nprint(' 3 ')\n", tests)["reason"] == "correct"
    assert score("print('1 2 3 4')", tests)["reason"] == "wrong"


def test_last_fenced_block_is_the_program():
    response = f"Here is a draft:\n```python\nprint(0)\n```\nFinal:\n```python\n{ADD}```\n"
    assert score(response, TESTS)["reason"] == "correct"
    assert score(response, TESTS, extract_code_block=False)["reason"] == "parse_error"


def test_runtime_error_is_wrong_and_syntax_error_is_parse_error():
    assert score("raise SystemExit(3)", TESTS)["reason"] == "wrong"
    assert score("def f(:\n  pass", TESTS) == {"score": -1.0, "answer": "0/3", "reason": "parse_error"}
    assert score("  \n", TESTS, reward_convention="binary") == {"score": 0.0, "answer": None, "reason": "no_answer"}


def test_total_budget_caps_a_looping_program():
    start = time.monotonic()
    out = score("while True: pass", TESTS, timeout_s=5.0, total_timeout_s=1.0)
    assert out["reason"] == "timeout" and out["score"] == -1.0
    assert time.monotonic() - start < 1.0 + 1.5
    assert_nothing_left(deadline_s=3.0)


@pytest.mark.parametrize(
    "tests,key",
    [
        ([], "tests"),
        ([{"input": "1"}], "tests\\[0\\]\\['output'\\]"),
        ([{"input": "1", "output": "2", "weight": 1}], "weight"),
        ("1 2", "tests"),
    ],
)
def test_bad_tests_name_the_offender(tests, key):
    with pytest.raises((ValueError, TypeError), match=key):
        score(ADD, tests)


def test_unknown_option_names_the_key():
    with pytest.raises(TypeError, match="memory_limit"):
        score(ADD, TESTS, memory_limit=5)


def test_strongest_level_is_chosen():
    assert resolve_isolation("auto") == (NAMESPACE_LEVELS[0] if NAMESPACE_LEVELS else "rlimits")


@pytest.mark.parametrize("level", NAMESPACE_LEVELS + ["rlimits"])
def test_limits_hold_at_every_level(level):
    limits = SandboxLimits(timeout_s=1.0, memory_mb=256, isolation=level)
    mem = run_program("x = bytearray(1 << 30)\nprint('allocated')", "", limits)
    assert mem.returncode != 0 and "MemoryError" in mem.stderr and "allocated" not in mem.stdout
    flood = run_program("import sys\nwhile True: sys.stdout.write('x' * 65536)", "", limits)
    assert flood.output_truncated and len(flood.stdout) <= limits.max_output_bytes
    sleeper = run_program("import time\ntime.sleep(60)", "", limits)
    assert sleeper.timed_out and sleeper.returncode is None and sleeper.wall_s < 1.0 + 1.0
    assert_nothing_left(deadline_s=3.0)


@pytest.mark.parametrize("level", NAMESPACE_LEVELS)
def test_namespace_levels_block_network_and_outside_writes(level):
    limits = SandboxLimits(timeout_s=3.0, isolation=level)
    connect = "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\nprint('open')"
    net = run_program(connect, "", limits)
    assert "open" not in net.stdout and net.returncode != 0
    outside = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"pwned-{uuid.uuid4().hex}")
    write = run_program(f"open({outside!r}, 'w').write('x')\nprint('wrote')", "", limits)
    assert "wrote" not in write.stdout and not os.path.exists(outside)
    marker = f"/tmp/sandbox-private-{uuid.uuid4().hex}"
    private = run_program(f"open({marker!r}, 'w').write('x')\nimport os\nprint(os.getcwd())", "", limits)
    assert private.returncode == 0 and not os.path.exists(marker)  # the sandbox's /tmp is its own tmpfs


def _rlimits_level_bounds_processes() -> bool:
    """RLIMIT_NPROC never binds root; the rlimits level runs as nobody only when the stdlib is world-readable."""
    if os.geteuid() != 0:
        return True
    path = os.path.abspath(sys.base_prefix)
    while path != os.path.dirname(path):
        if not os.stat(path).st_mode & 0o001:
            return False
        path = os.path.dirname(path)
    return True


# userns maps our own uid into the namespace, so as root it is unbounded too: such a run would only be stopped by the
# wall clock after forking thousands of processes on a shared host, so it is not run
FORK_BOMB_LEVELS = [lvl for lvl in NAMESPACE_LEVELS if lvl == "full" or os.geteuid() != 0] + (
    ["rlimits"] if _rlimits_level_bounds_processes() else []
)


@pytest.mark.parametrize("level", FORK_BOMB_LEVELS)
def test_fork_bomb_is_contained(level):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run_program(bomb, "", SandboxLimits(timeout_s=1.0, max_processes=8, isolation=level))
    assert result.wall_s < 1.0 + 1.5
    assert_nothing_left(deadline_s=3.0)


def test_private_work_dir_is_removed_at_rlimits_level():
    result = run_program("import os\nprint(os.getcwd())\nopen('f.txt', 'w').write('x')", "",
                         SandboxLimits(isolation="rlimits"))
    workdir = result.stdout.strip()
    assert workdir.startswith("/tmp/resrl-sandbox-") and not os.path.exists(workdir)


def test_bad_limits_name_the_field():
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=0)
    with pytest.raises(ValueError, match="isolation"):
        SandboxLimits(isolation="docker")
