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


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process on this host."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                parents[int(pid)] = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return parents


def _ours(pid: int, parents: dict[int, int]) -> bool:
    """``pid`` is this process or one of its live descendants."""
    me = os.getpid()
    while pid in parents and pid > 1:
        if pid == me:
            return True
        pid = parents[pid]
    return False


def sandbox_processes() -> int:
    """This process's sandboxes still running: processes running the code sandbox's launcher (or forked by it)
    whose starter (the launcher's last argument, rewards/sandbox.py) is this process, one of its live descendants
    (a reward worker), or gone (a worker that died). Another pytest process's sandboxes on the same host (the fast
    tier's other half) have a live starter outside this tree and are not counted."""
    parents = _parents()
    count = 0
    for pid in _pids_naming(b"sandbox_launcher.py"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                starter = int(fh.read().rstrip(b"\0").split(b"\0")[-1])
        except (OSError, ValueError):
            count += 1  # unreadable: counted, never hidden
            continue
        if _ours(starter, parents) or starter not in parents:
            count += 1
    return count


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
