"""Shared by the tests that start processes: find and kill what a run left behind, or assert that nothing did."""

import os
import signal
import subprocess
import time


def _pids_naming(marker: bytes) -> list[int]:
    """Processes whose command line contains ``marker``."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker in fh.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def kill_processes_naming(marker: str) -> None:
    """SIGKILL every process whose command line contains ``marker`` (a run's private Ray temp dir: only its own)."""
    for pid in _pids_naming(marker.encode()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue


def sandbox_processes() -> int:
    """Processes on this host still running the code sandbox's launcher (or anything it forked)."""
    return len(_pids_naming(b"sandbox_launcher.py"))


def assert_nothing_left(deadline_s: float = 5.0) -> None:
    """Every sandboxed process is gone shortly after the run returned."""
    end = time.monotonic() + deadline_s
    while sandbox_processes() and time.monotonic() < end:
        time.sleep(0.05)
    assert sandbox_processes() == 0


def run_in_own_session(cmd, env, timeout, cwd=None):
    """(returncode or None on timeout, output) of ``cmd`` in its own session; its process group is killed on timeout."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=cwd)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return None, proc.communicate()[0]
