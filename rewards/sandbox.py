"""Run one untrusted Python program on one input in a sandboxed subprocess.

The parent side of the sandbox: it starts ``sandbox_launcher.py`` (a fresh interpreter that isolates itself, see its
docstring for the isolation levels) in its own session, feeds it the program and the input, reads at most
``max_output_bytes`` of output, and kills the whole process group at the wall-clock deadline. Everything here is
thread-safe: no ``preexec_fn`` (unsafe in threaded Ray actors), only Popen and selectors.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_launcher.py")
LEVELS = ("full", "userns", "rlimits")
SETUP_FAILED = 121  # sandbox_launcher.SETUP_FAILED (the launcher cannot import us: it runs with -S)


@dataclasses.dataclass
class SandboxLimits:
    """Limits of one sandboxed run; every field is enforced by the kernel except where noted."""

    # Wall-clock limit in seconds; the process group is SIGKILLed when it passes (CPU time is limited to ceil+1).
    timeout_s: float = 5.0
    # Address-space limit (RLIMIT_AS) in MiB: a memory bomb gets MemoryError instead of eating the node.
    memory_mb: int = 512
    # Extra processes/threads the program may create (RLIMIT_NPROC above the current count of its uid).
    max_processes: int = 16
    # Largest file the program may write (RLIMIT_FSIZE), MiB.
    file_mb: int = 16
    # Size of the private tmpfs that holds the work dir and replaces /tmp, /var/tmp, /dev/shm (namespace levels).
    tmpfs_mb: int = 64
    # Stdout beyond this many bytes is not read: the run is killed and marked truncated (enforced by the parent).
    max_output_bytes: int = 4 * 1024 * 1024
    # "auto" picks the strongest level that works here (probed once per process): full > userns > rlimits.
    isolation: str = "auto"

    def __post_init__(self):
        if self.isolation not in ("auto",) + LEVELS:
            raise ValueError(f"isolation must be one of {('auto',) + LEVELS}, got {self.isolation!r}")
        for name in ("timeout_s", "memory_mb", "max_processes", "file_mb", "tmpfs_mb", "max_output_bytes"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclasses.dataclass
class SandboxResult:
    """What one run produced."""

    stdout: str
    stderr: str
    # Exit status of the program (128 + signal when killed by a signal); None when we killed it at the deadline.
    returncode: int | None
    timed_out: bool
    # Stdout exceeded ``max_output_bytes`` and the run was killed.
    output_truncated: bool
    # The isolation level the run used.
    isolation: str
    wall_s: float


_probe_lock = threading.Lock()
_probed: dict[str, bool] = {}


def isolation_available(level: str) -> bool:
    """Whether ``level`` can be set up on this host (a trivial program is run once per process and level)."""
    with _probe_lock:
        if level not in _probed:
            result = _launch("print('ok')", "", SandboxLimits(timeout_s=10.0, isolation=level), level)
            _probed[level] = result.returncode == 0 and result.stdout.strip() == "ok"
        return _probed[level]


def resolve_isolation(requested: str) -> str:
    """The level to use for ``requested`` ("auto": the strongest available)."""
    if requested != "auto":
        return requested
    for level in LEVELS:
        if isolation_available(level):
            return level
    raise RuntimeError("sandbox: not even the 'rlimits' level works on this host")


def run_program(program: str, stdin: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``program`` (Python source) on ``stdin`` under ``limits``; never raises for misbehaving programs."""
    limits = limits or SandboxLimits()
    level = resolve_isolation(limits.isolation)
    result = _launch(program, stdin, limits, level)
    if result.returncode == SETUP_FAILED and "isolation level" in result.stderr:
        raise RuntimeError(f"sandbox: isolation level {level!r} failed to set up: {result.stderr.strip()[-300:]}")
    return result


def _launch(program: str, stdin: str, limits: SandboxLimits, level: str) -> SandboxResult:
    """Start the launcher in its own session, talk to it under the deadline, sweep its process group."""
    workdir = tempfile.mkdtemp(prefix="resrl-sandbox-") if level == "rlimits" else "-"
    launcher_limits = {
        "memory_mb": int(limits.memory_mb),
        "cpu_s": int(math.ceil(limits.timeout_s)) + 1,
        "file_mb": int(limits.file_mb),
        "tmpfs_mb": int(limits.tmpfs_mb),
        "max_processes": int(limits.max_processes),
    }
    source = program.encode("utf-8", errors="surrogatepass")
    payload = f"{len(source)}\n".encode() + source + stdin.encode("utf-8", errors="surrogatepass")
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", LAUNCHER, level, workdir, json.dumps(launcher_limits), str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=workdir if level == "rlimits" else "/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        start_new_session=True,  # its own process group: one killpg reaches everything it forks
        close_fds=True,
    )
    try:
        out, err, timed_out, truncated = _communicate(proc, payload, start + limits.timeout_s, limits.max_output_bytes)
        returncode = _finish(proc, start + limits.timeout_s, kill_now=timed_out or truncated)
        timed_out = timed_out or (returncode is None and not truncated)
    finally:
        _kill_group(proc)
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
        if workdir != "-":
            shutil.rmtree(workdir, ignore_errors=True)
    return SandboxResult(
        stdout=out.decode("utf-8", errors="replace"),
        stderr=err[-65536:].decode("utf-8", errors="replace"),
        returncode=None if timed_out else returncode,
        timed_out=timed_out,
        output_truncated=truncated,
        isolation=level,
        wall_s=time.monotonic() - start,
    )


def _communicate(proc, payload: bytes, deadline: float, max_out: int):
    """Write stdin and read stdout/stderr until EOF, the deadline or the output cap (poll-based, no threads)."""
    out, err, pending = bytearray(), bytearray(), memoryview(payload)
    timed_out = truncated = False
    with selectors.DefaultSelector() as sel:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while sel.get_map() and not truncated:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(remaining):
                if key.fileobj is proc.stdin:
                    try:
                        pending = pending[os.write(key.fd, pending[:65536]) :]
                    except (BrokenPipeError, BlockingIOError) as exc:
                        if isinstance(exc, BrokenPipeError):
                            pending = pending[:0]
                    if not pending:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is out and len(out) > max_out:
                    truncated = True
                elif key.data is err and len(err) > 1 << 20:
                    del err[: len(err) - 65536]  # keep the tail of a stderr flood only
    return bytes(out[:max_out]), bytes(err), timed_out, truncated


def _finish(proc, deadline: float, kill_now: bool) -> int | None:
    """Wait (without reaping, so the process group id stays ours) until the launcher exits or the deadline."""
    while not kill_now:
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return proc.returncode
        if info is not None:
            code = info.si_status
            return code if info.si_code == os.CLD_EXITED else 128 + code
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.002)
    return None


def _kill_group(proc) -> None:
    """SIGKILL the launcher's process group (the launcher is a zombie or alive here, so the group id is ours)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
