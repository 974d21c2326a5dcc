"""Shared by the end-to-end tests: kill what a run left behind, found by its private temp dir."""

import os
import signal


def kill_processes_naming(marker: str) -> None:
    """SIGKILL every process whose command line contains ``marker`` (a run's private Ray temp dir: only its own)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            continue
