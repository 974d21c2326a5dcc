"""tests/process_cleanup.sandbox_processes counts this pytest process's sandboxes only (the fast tier runs two)."""

import subprocess
import sys
import time

import pytest
from process_cleanup import sandbox_processes


def _fake_launcher(starter: int) -> subprocess.Popen:
    """A process whose command line looks like rewards/sandbox.py's launcher, started by ``starter``."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "sandbox_launcher.py", str(starter)])


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("starter, counted", [("self", 1), ("init", 0), ("gone", 1)])
def test_a_launcher_counts_when_its_starter_is_this_tree_or_gone(starter, counted):
    before = sandbox_processes()
    pid = {"self": lambda: __import__("os").getpid(), "init": lambda: 1, "gone": _gone_pid}[starter]()
    proc = _fake_launcher(pid)
    try:
        time.sleep(0.3)
        assert sandbox_processes() - before == counted
    finally:
        proc.kill()
        proc.wait()
