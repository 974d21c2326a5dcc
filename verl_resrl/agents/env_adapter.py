"""The adapter protocol every text environment implements, and the task-id scheme that picks the adapter.

One adapter owns one environment process (a JVM for TextWorldExpress and ScienceWorld) and plays one episode at a
time: ``reset(task_id)`` starts the task's episode, ``step(action)`` plays one action, ``close()`` ends the process.
Task ids are strings ``KIND:...`` (``twx:twc:train:17:numLocations=1,...``, ``sciworld:boil:dev:14``); ``KIND``
names the adapter, the rest is the adapter's own and makes the episode deterministic.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Protocol

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Reset:
    """The start of an episode: the task's text, the first observation, admissible actions (None: not offered)."""

    task: str
    observation: str
    admissible: list[str] | None = None


@dataclasses.dataclass(frozen=True)
class StepResult:
    """One step: what the environment says, its score in [0, 1], whether the episode is over and won."""

    observation: str
    score: float
    done: bool
    success: bool
    admissible: list[str] | None = None
    invalid: bool = False  # the environment did not understand or could not do the action
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


class TextEnv(Protocol):
    """What the pool and the agent loop need of an environment adapter."""

    kind: str  # the task-id prefix this adapter plays
    invalid_reply: str  # the environment's own answer to an action it does not understand

    def reset(self, task_id: str) -> Reset: ...

    def step(self, action: str) -> StepResult: ...

    def close(self) -> None: ...

    def kill(self) -> None: ...


def kind_of(task_id: str) -> str:
    """The adapter kind of a task id (its text before the first ':'); ValueError naming the id if malformed."""
    if not isinstance(task_id, str) or ":" not in task_id:
        raise ValueError(f"task id {task_id!r} must be a string 'KIND:...' (e.g. 'twx:twc:train:0:...', "
                         f"'sciworld:boil:train:0')")
    return task_id.split(":", 1)[0]


# adapter kind -> (module, class, task-id parser): imported on first use, so a TWX run never imports ScienceWorld
ADAPTERS = {
    "twx": ("verl_resrl.agents.textworld_express", "TwxAdapter"),
    "sciworld": ("verl_resrl.agents.scienceworld", "SciWorldAdapter"),
}


def adapter_module(task_id: str):
    """The module of the adapter that plays ``task_id``; ValueError naming the id if no adapter has its kind."""
    kind = kind_of(task_id)
    if kind not in ADAPTERS:
        raise ValueError(f"task id {task_id!r}: no environment adapter of kind {kind!r}; known: {sorted(ADAPTERS)}")
    return importlib.import_module(ADAPTERS[kind][0])


def check_task_id(task_id: str) -> str:
    """``task_id`` if its adapter accepts it (no environment started), else ValueError naming it."""
    adapter_module(task_id).parse_task_id(task_id)
    return task_id


def new_adapter(kind: str) -> TextEnv:
    """A fresh adapter of ``kind`` (starts its environment process)."""
    module, cls = ADAPTERS[kind]
    return getattr(importlib.import_module(module), cls)()


def clamp01(value: float) -> float:
    """``value`` clipped to [0, 1] (ScienceWorld goes negative on failure)."""
    return min(1.0, max(0.0, float(value)))


def kill_process(proc) -> None:
    """SIGKILL a ``subprocess.Popen`` and reap it; a process already gone is fine."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except Exception:  # noqa: BLE001 - a zombie we cannot reap now is reaped by the next poll
        pass


def kill_wheel_env(env) -> None:
    """End a TWX / ScienceWorld wheel env's JVM at once (dead or hung) without talking to it."""
    proc = env._gateway.java_process  # noqa: SLF001 - the wheels keep their process there
    kill_process(proc)
    untie_from_owner(proc.pid)
    env.close = lambda: None  # the wheel's close (also run by its __del__) would talk to the dead JVM
    try:
        # py4j's finalizers tell the JVM about every collected proxy object unless the client is disconnected
        # (each try would log a connection-refused traceback); then free the local sockets and callback thread
        env._gateway._gateway_client.is_connected = False  # noqa: SLF001
        env._gateway.close()  # noqa: SLF001
    except Exception:  # noqa: BLE001 - nothing is left to free
        pass


# ------------------------------------------------------------------------------ environment JVMs die with their owner
# The wheels start their JVM with py4j's ``launch_gateway(die_on_exit=True)``: the JVM exits when its stdin pipe
# reaches EOF. That holds only while no other process holds the pipe's write end: a process forked after the JVM
# started (multiprocessing's fork, a worker pool, Ray's forks) inherits it, and when the owner is SIGKILLed (a test
# timeout, Ray) the JVM outlives it (measured: alive 8 s later, against ~2 s without the fork). The wheels' spawn path
# (py4j's module-level ``Popen`` inside ``launch_gateway``) takes no preexec hook, and ``PR_SET_PDEATHSIG`` would fire
# when the *thread* that started the JVM ends (the pool starts JVMs on per-environment threads), not the process. So
# each process that starts an environment also starts one small watchdog process (stdlib Python, no imports of ours):
# the owner tells it the pid of every JVM it starts (``add PID``) and ends (``del PID``); the watchdog holds a pidfd
# of each (so a pid reused after the JVM ended is never signalled) and SIGKILLs every JVM still registered as soon as
# its parent is gone (``getppid`` changes: fork-proof) or its stdin reaches EOF (the owner exited), then exits itself.
# Left open: a JVM whose owner is SIGKILLed in the ~0.3-2 s between the JVM's start and the wheel's constructor
# returning is not registered yet (py4j's broken pipe still ends it unless a fork holds the pipe).
WATCHDOG_POLL_S = 0.2
_WATCHDOG_SOURCE = r"""# verl_resrl environment watchdog (verl_resrl/agents/env_adapter.py): ends its owner's JVMs with it
import os, select, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the owner; this process ends when the owner does
owner, poll_s, held, buf = int(sys.argv[1]), float(sys.argv[2]), {}, b""
def finish():
    for fd in held.values():
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)
def read(timeout):
    # apply what the owner wrote (also what it wrote just before it died: the pipe keeps it); False at EOF
    global buf
    if not select.select([0], [], [], timeout)[0]:
        return True
    data = os.read(0, 65536)
    buf += data
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        verb, _, pid = line.decode().partition(" ")
        if not pid.isdigit():
            continue
        if verb == "add" and int(pid) not in held:
            try:
                held[int(pid)] = os.pidfd_open(int(pid))
            except OSError:
                pass
        elif verb == "del" and int(pid) in held:
            os.close(held.pop(int(pid)))
    return bool(data)
while True:
    if not read(poll_s):
        finish()
    if os.getppid() != owner:
        while read(0) and select.select([0], [], [], 0)[0]:
            pass
        finish()
"""


class _Watchdog:
    """This process's watchdog (see above): started on first use, one per process (a forked child starts its own)."""

    lock = threading.Lock()
    proc: subprocess.Popen | None = None
    owner: int | None = None

    @classmethod
    def send(cls, line: str, start: bool) -> int | None:
        """Write one command; with ``start``, start the watchdog first if this process has none. Its pid, or None."""
        with cls.lock:
            if cls.owner != os.getpid():  # a forked child: the parent's watchdog watches the parent, not us
                cls.proc, cls.owner = None, os.getpid()
            if cls.proc is not None and cls.proc.poll() is not None:
                cls.proc = None
            if cls.proc is None:
                if not start:
                    return None
                cls.proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _WATCHDOG_SOURCE, str(os.getpid()), str(WATCHDOG_POLL_S)],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
            try:
                cls.proc.stdin.write(f"{line}\n".encode())
                cls.proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                logger.warning("the environment watchdog (pid %s) is gone (%s): JVM %s is tied only by py4j's pipe",
                               cls.proc.pid, exc, line)
                cls.proc = None
                return None
            return cls.proc.pid


def tie_to_owner(pid: int) -> int | None:
    """Make process ``pid`` (an environment's JVM) die with this process, even by SIGKILL; the watchdog's pid.
    A no-op (None) where Linux's pidfds are missing (py4j's broken-pipe exit is then the only tie)."""
    if not hasattr(os, "pidfd_open"):
        return None
    return _Watchdog.send(f"add {int(pid)}", start=True)


def untie_from_owner(pid: int) -> None:
    """``pid`` ended (or was killed): the watchdog forgets it."""
    _Watchdog.send(f"del {int(pid)}", start=False)


def watchdog_pid() -> int | None:
    """This process's watchdog, if it runs."""
    with _Watchdog.lock:
        proc = _Watchdog.proc if _Watchdog.owner == os.getpid() else None
        return proc.pid if proc is not None and proc.poll() is None else None
