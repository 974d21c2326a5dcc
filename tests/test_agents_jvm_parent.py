"""Environment JVMs die with the Python process that owns them, even when it is SIGKILLed (env_adapter's watchdog).

Independent expectation: the process table. A child Python process starts an environment (and, in the case that
leaked before, forks a process that inherits the JVM's stdin pipe, so py4j's broken-pipe exit never fires), prints
its JVM's and watchdog's pids, and is SIGKILLed; within a few seconds neither the JVM nor the watchdog runs. The
watchdog itself is also checked on plain ``sleep`` processes: a registered one is killed with its owner, one
unregistered first is left alone.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from test_agents_twx import gone

pytestmark = pytest.mark.timeout(120)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT_S = 5.0

# prints "JVM WATCHDOG FORKED" then waits to be killed; argv: kind (twx / sciworld / sleep), fork (0/1)
CHILD = r"""
import os, subprocess, sys, time
from verl_resrl.agents import env_adapter
kind, fork = sys.argv[1], sys.argv[2] == "1"
if kind == "twx":
    from verl_resrl.agents.textworld_express import TwxAdapter
    adapter = TwxAdapter()  # kept: a collected adapter's wheel env closes its JVM itself
    pid = adapter.pid
elif kind == "sciworld":
    from verl_resrl.agents.scienceworld import SciWorldAdapter
    adapter = SciWorldAdapter()
    pid = adapter.pid
else:  # sleep: one tied and one tied then untied
    tied = subprocess.Popen(["sleep", "300"])
    untied = subprocess.Popen(["sleep", "300"])
    env_adapter.tie_to_owner(tied.pid)
    env_adapter.tie_to_owner(untied.pid)
    env_adapter.untie_from_owner(untied.pid)
    pid = f"{tied.pid},{untied.pid}"
forked = 0
if fork:
    forked = os.fork()
    if forked == 0:  # holds every inherited pipe, the JVM's stdin included, as a forked worker would
        time.sleep(300)
        os._exit(0)
print(pid, env_adapter.watchdog_pid(), forked, flush=True)
time.sleep(300)
"""


def start_owner(kind: str, fork: bool):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, kind, "1" if fork else "0"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert len(line) == 3, f"the owner process printed {line!r} (exit {proc.poll()})"
    return proc, line[0], int(line[1]), int(line[2])


def wait_gone(pid: int, wait_s: float = WAIT_S) -> float | None:
    """Seconds until ``pid`` is gone, or None if it still runs after ``wait_s``."""
    start = time.monotonic()
    while not gone(pid):
        if time.monotonic() - start > wait_s:
            return None
        time.sleep(0.05)
    return time.monotonic() - start


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("kind, fork", [("twx", True), ("twx", False), ("sciworld", True)],
                         ids=["twx-forked-pipe-holder", "twx", "sciworld-forked-pipe-holder"])
def test_a_sigkilled_owner_leaves_no_jvm(kind, fork):
    pytest.importorskip("textworld_express" if kind == "twx" else "scienceworld")
    owner, jvm, watchdog, forked = start_owner(kind, fork)
    jvm = int(jvm)
    try:
        assert not gone(jvm) and not gone(watchdog)
        assert b"java" in open(f"/proc/{jvm}/cmdline", "rb").read()
        owner.kill()
        owner.wait(10)
        took = wait_gone(jvm)
        assert took is not None, f"JVM {jvm} still runs {WAIT_S} s after its owner was SIGKILLed"
        assert wait_gone(watchdog) is not None, "the watchdog outlived its work"
    finally:
        for pid in (forked, jvm, watchdog):
            if pid:
                kill(pid)
        owner.kill()


def test_the_watchdog_kills_what_is_registered_and_spares_what_was_unregistered():
    owner, pids, watchdog, _ = start_owner("sleep", fork=False)
    tied, untied = map(int, pids.split(","))
    try:
        owner.kill()
        owner.wait(10)
        assert wait_gone(tied) is not None, "the registered process outlived its owner"
        assert wait_gone(watchdog) is not None
        time.sleep(2 * 0.2)
        assert not gone(untied), "a process unregistered before its owner died was killed"
    finally:
        for pid in (tied, untied, watchdog):
            kill(pid)


def test_a_clean_exit_ends_the_watchdog_and_a_forked_child_gets_its_own(tmp_path):
    pytest.importorskip("textworld_express")
    script = r"""
import os, sys, time
from verl_resrl.agents import env_adapter
from verl_resrl.agents.textworld_express import TwxAdapter
first = TwxAdapter()
parent_dog = env_adapter.watchdog_pid()
r, w = os.pipe()
child = os.fork()
if child == 0:  # a forked child starts its own environment: tied to the child, by the child's own watchdog
    os.close(r)
    adapter = TwxAdapter()
    os.write(w, f"{adapter.pid} {env_adapter.watchdog_pid()}\n".encode())
    time.sleep(300)
    os._exit(0)
os.close(w)
jvm, dog = map(int, os.read(r, 100).split())
os.kill(child, 9)
os.waitpid(child, 0)
print(first.pid, parent_dog, jvm, dog, flush=True)
time.sleep(1)  # then exit without closing anything
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first_jvm, parent_dog, child_jvm, child_dog = map(int, proc.stdout.split())
    try:
        assert child_dog != parent_dog
        for pid in (child_jvm, child_dog, first_jvm, parent_dog):
            assert wait_gone(pid) is not None, f"process {pid} outlived its owner"
    finally:
        for pid in (child_jvm, child_dog, first_jvm, parent_dog):
            kill(pid)
