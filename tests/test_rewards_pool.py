"""VerifierPool and its worker processes: hostile inputs, ordering, timeouts, crash recovery, validation.

One pool (a private local Ray cluster, 2 actors) is shared by the module to keep the runtime modest.
"""

import os
import signal
import threading
import time
import uuid

import pytest

from verl_resrl.rewards.pool import VerifierPool, normalize_item
from verl_resrl.rewards.worker_process import KILL_MARGIN_S, VerifierProcess
from process_cleanup import assert_nothing_left

TIMEOUT_S = 1.5
TOUCHED = f"/tmp/resrl-pwned-{uuid.uuid4().hex}"
OUTSIDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"pwned-{uuid.uuid4().hex}")
WTP = {"wrong", "timeout", "parse_error"}


def m(response, allowed, ground_truth="1"):
    return ({"kind": "math", "response": response, "ground_truth": ground_truth}, allowed)


def c(program, allowed, output="ok", stdin=""):
    return ({"kind": "code", "program": program, "tests": [{"input": stdin, "output": output}]}, allowed)


# (item, allowed reasons): each outcome is the one a correct verifier must give whatever the attack does; an
# attack that succeeded (network, outside write, escaping the limits) would print "ok" and be scored "correct".
HOSTILE = [
    m("9" * 5_000_000, {"no_answer"}),
    m("\\boxed{" + "9" * 1_000_000 + "}", {"no_answer"}),  # the box opens before the searched tail
    m("\\boxed{" + "9" * 3000 + "}", {"parse_error"}),  # too long to parse
    m(r"\boxed{9**9**9**9}", {"parse_error"}),
    m(r"\boxed{9^{9^{9^{9}}}}", {"parse_error"}),
    m(r"\boxed{10^{10^{10}}}", {"parse_error"}),
    m(r"\boxed{2^{99999999}}", {"parse_error"}),
    m(r"\boxed{1.0e400000}", {"parse_error"}),
    m("Answer: 99999999999999999999!", {"parse_error"}),
    m("\\boxed{" + "\\frac{1}{" * 200 + "1" + "}" * 200 + "}", {"parse_error"}),
    m("Answer: " + "(" * 100 + "1" + ")" * 100, {"parse_error"}),  # nesting guard
    m("\\boxed{" + "\\sqrt{" * 30 + "2" + "}" * 30 + "}", {"parse_error"}),
    m(r"\boxed{\frac{1}{", {"no_answer"}),
    m(r"\boxed{\frac{1}{}}", WTP),
    m(r"\boxed{\begin{pmatrix}1&2\\3}", WTP),
    m(r"\boxed{\binom{1000000000}{500000000}}", WTP),
    m(r"\boxed{\int_0^1 x^{1000000} dx}", WTP),
    m(r"\boxed{(x+y+z+1)^{40}}", WTP, ground_truth="(x+y+z+2)^{40}"),
    m("Answer: ①②③", WTP),
    m("Answer: \u202e\u200b1\u0000\ud800", WTP | {"correct"}),
    m("\\boxed{1}" * 100_000, {"correct"}),
    m("Answer: " + "x" * 1_000_000, {"no_answer"}),
    m(f"Answer: __import__('os').system('touch {TOUCHED}')", WTP),
    m(r"\boxed{\input{/etc/passwd}}", WTP),
    m("\\boxed{" + "1+" * 100_000 + "1}", {"no_answer"}),
    m("\\boxed{" + "1+" * 1000 + "1}", {"parse_error"}),
    c("while True:\n    pass", {"timeout"}),
    c("import time\ntime.sleep(3600)", {"timeout"}),
    c("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", {"timeout", "wrong"}),
    c("x = bytearray(8 * 1024 ** 3)\nprint('ok')", {"wrong"}),
    c("chunks = []\nwhile True:\n    chunks.append(' ' * 10 ** 7)", {"wrong", "timeout"}),  # ~1 s to fill 512 MiB
    c("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\nprint('ok')", {"wrong"}),
    c(f"open({OUTSIDE!r}, 'w').write('x')\nprint('ok')", {"wrong"}),
    c("with open('big', 'w') as f:\n    f.write('x' * 10 ** 9)\nprint('ok')", {"wrong"}),
    c("import sys\nwhile True:\n    sys.stdout.write('ok' * 65536)", {"wrong"}),
    c("import sys\nwhile True:\n    sys.stderr.write('e' * 65536)", {"timeout"}),
    c("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('ok')", {"wrong", "correct"}),
    c("import os, signal\nos.killpg(0, signal.SIGKILL)", {"wrong"}),
    c("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(3600)\nprint('ok')", {"correct"}),
    c("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass", {"timeout"}),
    c("import sys\nsys.setrecursionlimit(10 ** 9)\ndef f(n):\n    return f(n + 1)\nf(0)", {"wrong", "timeout"}),
    c("x = 1\n" * 20_000, {"parse_error"}),
    c("(" * 10_000 + ")" * 10_000, {"parse_error"}),
    c("print(open('/etc/shadow').read()[:0] + 'ok')", {"wrong"}),
    c("import ctypes\nctypes.string_at(0)", {"wrong"}),
    c("import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()", WTP),
    c("import os\nos.system('yes > /dev/null')\nprint('ok')", {"timeout", "wrong"}),
    c("import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass", {"timeout"}),
    c("print('①')", {"correct"}, output="①"),
]


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(num_workers=2, timeout_s=TIMEOUT_S) as p:
        yield p


def test_hostile_suite_size():
    assert len(HOSTILE) >= 30


def test_each_hostile_item_is_scored_within_its_timeout():
    """The enforcement unit alone: every item returns within timeout + margin with an allowed reason."""
    worker = VerifierProcess()
    try:
        for index, (item, allowed) in enumerate(HOSTILE):
            worker.start()  # a restart after a kill is not part of the next item's latency
            start = time.monotonic()
            result = worker.score(normalize_item(index, item), TIMEOUT_S)
            elapsed = time.monotonic() - start
            assert result["reason"] in allowed, (index, result)
            assert result["score"] == (1.0 if result["reason"] == "correct" else -1.0)
            assert elapsed <= TIMEOUT_S + KILL_MARGIN_S + 0.5, (index, elapsed)
    finally:
        worker.close()
    assert not os.path.exists(TOUCHED) and not os.path.exists(OUTSIDE)
    assert_nothing_left()


def test_hostile_batch_through_the_pool_then_it_still_answers(pool):
    items = [item for item, _ in HOSTILE]
    results = pool.score_batch(items)
    assert len(results) == len(HOSTILE)
    for index, ((_, allowed), result) in enumerate(zip(HOSTILE, results)):
        assert result["reason"] in allowed, (index, result)
    assert_nothing_left()
    after = pool.score_batch([{"kind": "math", "response": "Answer: 3", "ground_truth": "3"},
                              {"kind": "code", "program": "print(input()[::-1])",
                               "tests": [{"input": "abc", "output": "cba"}]}])
    assert [r["reason"] for r in after] == ["correct", "correct"]


def test_one_result_per_item_in_order(pool):
    items = []
    for i in range(23):
        if i % 3 == 0:
            items.append({"kind": "code", "program": f"print({i})", "tests": [{"input": "", "output": str(i)}]})
        else:
            items.append({"kind": "math", "response": f"Answer: {i}", "ground_truth": str(i if i % 2 else i + 1)})
    results = pool.score_batch(items)
    expected = ["correct" if (i % 3 == 0 or i % 2) else "wrong" for i in range(23)]
    assert [r["reason"] for r in results] == expected
    assert [r["answer"] for r in results if r["answer"] and "/" not in r["answer"]] == [
        str(i) for i in range(23) if i % 3
    ]


def test_options_travel_with_items(pool):
    results = pool.score_batch([
        {"kind": "math", "response": "Answer: 2", "ground_truth": "3", "reward_convention": "binary"},
        {"kind": "math", "response": "Answer: 3", "ground_truth": "3", "length_scale_start": 10,
         "max_response_length": 20, "response_length": 15},
        {"kind": "code", "program": "print(1)", "tests": [{"input": "", "output": "1"}, {"input": "", "output": "2"}],
         "partial_credit": True, "reward_convention": "binary"},
    ])
    assert [r["score"] for r in results] == [0.0, pytest.approx(0.85), 0.5]


@pytest.mark.parametrize(
    "item,key",
    [
        ({"kind": "maths", "response": "x", "ground_truth": "1"}, "kind"),
        ({"kind": "math", "response": "x"}, "ground_truth"),
        ({"kind": "math", "response": "x", "ground_truth": "1", "reward_sign": 1}, "reward_sign"),
        ({"kind": "code", "program": "print(1)", "tests": [{"input": ""}]}, "output"),
        ({"kind": "code", "program": "print(1)", "tests": [], "partial": True}, "tests"),
    ],
)
def test_bad_items_are_rejected_before_scoring(pool, item, key):
    with pytest.raises((ValueError, TypeError), match=key):
        pool.score_batch([{"kind": "math", "response": "Answer: 1", "ground_truth": "1"}, item])


def test_uninterruptible_item_is_killed_with_its_worker_and_the_worker_replaced():
    """A math item allowed 60 s in-process is stopped by the process kill at timeout + margin."""
    worker = VerifierProcess()
    try:
        worker.start()
        first_pid = worker.pid
        slow = normalize_item(0, {"kind": "math", "response": r"\boxed{(x+y+z+1)^{40}}",
                                  "ground_truth": "(x+y+z+2)^{40}", "timeout_s": 60.0})
        start = time.monotonic()
        result = worker.score(slow, 1.0)
        assert result == {"score": -1.0, "answer": "(x+y+z+1)^{40}", "reason": "timeout"}
        assert time.monotonic() - start <= 1.0 + KILL_MARGIN_S + 0.5
        ok = worker.score(normalize_item(1, {"kind": "math", "response": "Answer: 4", "ground_truth": "4"}), 5.0)
        assert ok["reason"] == "correct" and worker.pid != first_pid and worker.restarts == 1
    finally:
        worker.close()


def _kill_worker_when_busy(worker: VerifierProcess, times: int, stop: threading.Event):
    """Kill the worker process ``times`` times, each time once it holds an item (a crash, not a timeout)."""
    seen = set()
    while len(seen) < times and not stop.is_set():
        pid = worker.pid
        if pid is not None and pid not in seen and worker._lock.locked():
            time.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            seen.add(pid)
        time.sleep(0.01)


@pytest.mark.parametrize("kills,reason", [(1, "correct"), (2, "crash")])
def test_worker_crash_is_retried_once_then_scored_crash(kills, reason):
    worker = VerifierProcess()
    stop = threading.Event()
    try:
        worker.start()
        item = normalize_item(0, {"kind": "code", "program": "import time\ntime.sleep(1.0)\nprint(7)",
                                  "tests": [{"input": "", "output": "7"}], "reward_convention": "binary"})
        killer = threading.Thread(target=_kill_worker_when_busy, args=(worker, kills, stop))
        killer.start()
        result = worker.score(item, 10.0)
        stop.set()
        killer.join()
        assert result["reason"] == reason
        assert result["score"] == (1.0 if reason == "correct" else 0.0)
    finally:
        stop.set()
        worker.close()
    assert_nothing_left()


def test_dead_actor_is_replaced_and_its_items_retried(pool):
    import ray

    slow = {"kind": "code", "program": "import time\ntime.sleep(0.5)\nprint(input())",
            "tests": [{"input": "5", "output": "5"}]}
    items = [dict(slow) for _ in range(6)] + [{"kind": "math", "response": "Answer: 9", "ground_truth": "9"}]
    victim = pool.actors[0]
    before = pool.replacements

    def kill_soon():
        time.sleep(1.0)
        ray.kill(victim)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    results = pool.score_batch(items)
    killer.join()
    assert [r["reason"] for r in results] == ["correct"] * 7
    assert pool.replacements == before + 1 and pool.actors[0] is not victim
    assert pool.score_batch([items[-1]])[0]["reason"] == "correct"


def test_closed_pool_refuses_work():
    with VerifierPool(num_workers=1, timeout_s=2.0) as small:
        assert small.score_batch([{"kind": "math", "response": "Answer: 1", "ground_truth": "1"}])[0]["score"] == 1.0
    with pytest.raises(RuntimeError, match="closed"):
        small.score_batch([{"kind": "math", "response": "Answer: 1", "ground_truth": "1"}])
