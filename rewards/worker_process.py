"""One verification worker process, killed and replaced when an item overruns its timeout or the process dies.

``VerifierProcess`` (used by each pool actor, and usable without Ray) talks JSON lines to a child started as
``python -m verl_resrl.rewards.worker_process``. The child scores in its main thread, so math's in-process deadline
(``setitimer``) works there; the parent's wall-clock kill at ``timeout + margin`` is the backstop for work that cannot
be interrupted (C-level big-integer arithmetic, a stuck C extension).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time

logger = logging.getLogger(__name__)

# Seconds a worker may overrun an item's timeout before it is killed (covers scorer bookkeeping and IPC).
KILL_MARGIN_S = 1.0
# Seconds a fresh worker may take to import sympy and math-verify before it is declared broken.
STARTUP_TIMEOUT_S = 60.0


def negative_result(item: dict, reason: str, answer: str | None = None) -> dict:
    """The failure result of ``item`` under its reward convention (used for timeouts and crashes)."""
    convention = item.get("options", {}).get("reward_convention", "signed")
    return {"score": -1.0 if convention == "signed" else 0.0, "answer": answer, "reason": reason}


def cheap_answer(item: dict) -> str | None:
    """The extracted answer of a math item without any parsing (bounded string work), for logging a failure."""
    if item.get("kind") != "math":
        return None
    from verl_resrl.rewards.math_answer import extract_answer

    return extract_answer(item["response"])


def score_item(item: dict, timeout_s: float) -> dict:
    """Score one validated item in this process (the child side)."""
    options = dict(item.get("options", {}))
    if item["kind"] == "math":
        from verl_resrl.rewards import math as math_verifier

        options.setdefault("timeout_s", timeout_s)
        return math_verifier.score(item["response"], item["ground_truth"], **options)
    if item["kind"] == "function_call_multi_turn":
        from verl_resrl.rewards import function_call_multi_turn

        # the check's own deadline (its sandboxed backends are killed there) fits the item budget
        options["timeout_s"] = min(options.get("timeout_s") or timeout_s, timeout_s)
        return function_call_multi_turn.score(item["responses"], item["ground_truth"], item["initial_config"],
                                              item["involved_classes"], item.get("tools"), **options)
    if item["kind"] == "function_call":
        from verl_resrl.rewards import function_call

        # bounded string and parser work (length and depth guards); the parent's kill is the backstop
        return function_call.score(item["response"], item["ground_truth"], item.get("tools"), **options)
    from verl_resrl.rewards import code as code_verifier

    # the whole test list must fit the item budget, so the parent's kill is only a backstop
    options["total_timeout_s"] = min(options.get("total_timeout_s") or timeout_s, timeout_s)
    return code_verifier.score(item["program"], item["tests"], timeout_s=item.get("timeout_s", timeout_s), **options)


@dataclasses.dataclass
class _Child:
    """A worker process and the bytes read from it that do not yet form a full line."""

    proc: subprocess.Popen
    buffer: bytes = b""


class VerifierProcess:
    """Parent side of one worker process; thread-safe (one item at a time).

    With ``standby`` (default) a second, already-initialised worker waits in reserve, so replacing a killed worker
    costs nothing: a hostile item costs its timeout, not also the next item's wait for sympy to import.
    """

    def __init__(self, env: dict | None = None, standby: bool = True):
        self._child: _Child | None = None
        self._standby: _Child | None = None
        self._use_standby = standby
        self._lock = threading.Lock()
        self._env = env
        self.restarts = 0  # how many times a worker was put in place after the first
        self._started = 0

    @property
    def pid(self) -> int | None:
        """Pid of the live worker (None before the first item or after a kill)."""
        child = self._child
        return child.proc.pid if child is not None and child.proc.poll() is None else None

    def start(self) -> None:
        """Put a live, initialised worker in place (the standby if there is one) and refill the standby."""
        if self.pid is not None:
            return
        self._kill(self._child)
        self._child = None
        self.restarts += self._started
        self._started = 1
        candidates = [self._standby, None] if self._standby is not None else [None]  # None: a fresh spawn
        self._standby = None
        for candidate in candidates:
            child = candidate or self._spawn()
            if self._read_line(child, time.monotonic() + STARTUP_TIMEOUT_S) == {"ready": True}:
                self._child = child
                break
            self._kill(child)
        if self._child is None:
            raise RuntimeError("verifier worker process did not start (see its stderr)")
        if self._use_standby:
            self._standby = self._spawn()  # initialises in the background while this one works

    def _spawn(self) -> _Child:
        """Start a worker process without waiting for it."""
        env = dict(os.environ if self._env is None else self._env)
        proc = subprocess.Popen(
            [sys.executable, "-m", "verl_resrl.rewards.worker_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # one killpg reaches the worker and anything it forked in its group
        )
        return _Child(proc)

    def score(self, item: dict, timeout_s: float) -> dict:
        """Score ``item``; a timeout kills the worker (reason "timeout"), a death is retried once, then "crash"."""
        with self._lock:
            for _attempt in range(2):
                try:
                    self.start()
                except RuntimeError:
                    logger.error("verifier worker failed to start; counting it as a crash of this item")
                    continue
                outcome = self._roundtrip(item, timeout_s)
                if outcome == "timeout":
                    self._kill(self._child)
                    return negative_result(item, "timeout", cheap_answer(item))
                if outcome is not None:
                    return outcome
                self._kill(self._child)  # it died under this item: replace it and retry once
            return negative_result(item, "crash", cheap_answer(item))

    def close(self) -> None:
        """Kill the worker and the standby."""
        with self._lock:
            for child in (self._child, self._standby):
                self._kill(child)
            self._child = self._standby = None

    def _roundtrip(self, item: dict, timeout_s: float):
        """Send one item; return its result, "timeout", or None when the worker died."""
        child = self._child
        try:
            child.proc.stdin.write(json.dumps({"item": item, "timeout_s": timeout_s}).encode() + b"\n")
            child.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        reply = self._read_line(child, time.monotonic() + timeout_s + KILL_MARGIN_S)
        if reply == "timeout":
            return "timeout"
        if reply is None or "result" not in reply:
            return None
        return reply["result"]

    @staticmethod
    def _read_line(child: _Child, deadline: float):
        """One JSON line from ``child`` before ``deadline``: the object, "timeout", or None on EOF."""
        fd = child.proc.stdout.fileno()
        while b"\n" not in child.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            child.buffer += chunk
        line, child.buffer = child.buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return None

    @staticmethod
    def _kill(child: _Child | None) -> None:
        """SIGKILL a worker's process group and reap it."""
        if child is None or child.proc.returncode is not None and child.proc.stdin.closed:
            return
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        child.proc.wait()
        for pipe in (child.proc.stdin, child.proc.stdout):
            pipe.close()


def _serve() -> None:
    """Child main loop: read items from stdin, write results to the saved stdout (stray prints go to stderr)."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    from verl_resrl.rewards import code, function_call, function_call_multi_turn, math  # noqa: F401 - before "ready"

    # sympy, math-verify and its parser (~1-2 s): paid here, before "ready", not inside an item's timeout
    math.warm_up()
    protocol.write(json.dumps({"ready": True}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"result": score_item(request["item"], request["timeout_s"])}
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which scores the item as a crash
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


if __name__ == "__main__":
    _serve()
