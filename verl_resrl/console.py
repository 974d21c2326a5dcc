"""A console a person can read: everything to a log file, only our lines and the errors to the terminal.

A CPU run of verl prints, per step, verl's ~4 KB one-line metrics dict and, through Ray's log forwarding, every
worker's warnings (one of them ~200 times a step). The launcher calls :func:`quiet_console` around ``run_ppo``
unless ``resrl_progress.verbose=true``: file descriptors 1 and 2 of the driver, which carry Ray's forwarded worker
output as well as the driver's own, are redirected into a pipe; a thread writes every line to the log file and
passes to the terminal only

* our lines (``[resrl] ...``: progress, validation tables, the closing summary),
* tracebacks, whole (from ``Traceback (most recent call last)`` to the exception line), and
* lines that report an error (``...Error``, ``...Exception``, or the words error / fatal / killed / died), warnings
  excepted.

Nothing is dropped: the log file holds every line, and its path is printed first.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from contextlib import contextmanager

RAY_PREFIX = re.compile(r"^(\x1b\[[0-9;]*m)*\([^()]*pid=\d+[^()]*\)(\x1b\[[0-9;]*m)*\s?")  # "(TaskRunner pid=12) "
OURS = "[resrl]"
# "ValueError:", "RayTaskError(...)" (a class-name suffix) or the word error / fatal / killed / died in any case
ERROR = re.compile(r"(Error|Exception)\b|(?i:\b(error|fatal|killed|died|segmentation fault)\b)")
WARNING = re.compile(r"(Warning|WARNING|warnings\.warn|\bWARN\b)")
TRACEBACK = "Traceback (most recent call last)"
CONFIG_ENTRY = re.compile(r"""^\s*[{\[]*\s*['"][^'"]+['"]\s*:""")  # a line of a pretty-printed dict


class LineFilter:
    """Decides, line by line, what reaches the terminal (stateful: a traceback is shown whole)."""

    def __init__(self):
        self.in_traceback = False

    def show(self, line: str) -> bool:
        body = RAY_PREFIX.sub("", line.rstrip("\n"))
        if TRACEBACK in body:
            self.in_traceback = True
            return True
        if self.in_traceback:
            # the frames and the source lines are indented; the first unindented line is the exception itself
            if body and not body[0].isspace():
                self.in_traceback = False
            return True
        if OURS in body:
            return True
        if CONFIG_ENTRY.match(body):  # a printed config ("'truncation': 'error',") reports no error
            return False
        return bool(ERROR.search(body)) and not WARNING.search(body)


class _Tee:
    """fd 1 and 2 into a pipe; a thread copies every line to ``log_path`` and the shown ones to the terminal."""

    def __init__(self, log_path: str):
        self.log_path = log_path
        sys.stdout.flush(), sys.stderr.flush()
        self.saved = {fd: os.dup(fd) for fd in (1, 2)}
        self.console = os.fdopen(os.dup(self.saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
        read_fd, write_fd = os.pipe()
        for fd in (1, 2):
            os.dup2(write_fd, fd)
        os.close(write_fd)
        self.log = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
        self.filter = LineFilter()
        self.thread = threading.Thread(target=self._pump, args=(read_fd,), name="resrl-console", daemon=True)
        self.thread.start()
        self.closed = False

    def _pump(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as pipe:
            for line in pipe:
                self.log.write(line)
                if self.filter.show(line):
                    self.console.write(line)

    def close(self) -> None:
        """Restore fd 1 and 2 (the pipe's last writer closes, the thread drains it), then close the files."""
        if self.closed:
            return
        self.closed = True
        sys.stdout.flush(), sys.stderr.flush()
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self.thread.join(timeout=30)
        self.log.close()
        self.console.flush()
        self.console.close()


@contextmanager
def quiet_console(log_path: str, enabled: bool = True):
    """Within the block, the terminal shows our lines and errors only; ``log_path`` gets everything."""
    if not enabled:
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    print(f"[resrl] full log (verl's metrics, Ray's worker output): {os.path.abspath(log_path)}  "
          "(resrl_progress.verbose=true shows it all here)", flush=True)
    tee = _Tee(log_path)
    atexit.register(tee.close)  # an uncaught error is printed before atexit runs: it still reaches the terminal
    try:
        yield
    finally:
        tee.close()
