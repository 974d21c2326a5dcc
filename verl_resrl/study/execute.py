"""Run a study plan: each training run and each eval as a subprocess with a hard timeout, resumable, with progress.

Every child runs in its own process group (``start_new_session``); on a timeout, or when the study itself gets
SIGTERM / Ctrl-C, the whole group gets SIGTERM, then SIGKILL after a grace period, so Ray workers and verifier
processes do not outlive their run. What is finished is decided from outputs (``outputs.py``), so a rerun of a
killed study redoes only the run that was cut short (its partial outputs are removed first: the recipes train from
the warm start, ``resume_mode: disable``) and the evals that are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from verl_resrl.study.outputs import eval_status, training_status
from verl_resrl.study.plan import WARMSTART, Plan, Run

STEP_LINE = re.compile(r"\[resrl\] step (\d+)/(\d+)")
GRACE_S = 15.0


class StudyInterrupted(Exception):
    """SIGTERM or SIGINT reached the study; the current child was stopped."""


class ChildTimeout(RuntimeError):
    """A run or eval exceeded its hard timeout; its process group was killed."""


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, SIGKILL it after GRACE_S."""
    for sig, wait_s in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            try:  # the leader is gone; members that ignored SIGTERM still get SIGKILL
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(cmd: list[str], log_path: str, timeout_s: float, on_line=None, env: dict | None = None) -> int:
    """Run ``cmd`` in a new process group, its output teed to ``log_path``; kill the group after ``timeout_s``."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                start_new_session=True, env=env, errors="replace")

        def pump():
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if on_line is not None:
                    on_line(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            raise ChildTimeout(f"{cmd[:4]}... exceeded its {timeout_s:.0f} s timeout; log: {log_path}") from None
        except BaseException:
            _stop_group(proc)
            raise
        finally:
            reader.join(timeout=5)
    return proc.returncode


class Progress:
    """The study's progress lines: which run, which step, elapsed and estimated time left."""

    def __init__(self, total_units: float, estimate_s: float, stream=None):
        self.start = time.monotonic()
        self.total, self.done, self.estimate_s = total_units, 0.0, estimate_s
        self.unit_seconds: list[float] = []  # measured seconds per training run (eval included) in this invocation
        self.stream = stream or sys.stdout
        self.label, self._last = "", 0.0

    def left_s(self, fraction_of_current: float = 0.0) -> float:
        """Seconds left: remaining units times the measured mean (or the configured estimate before any)."""
        per = sum(self.unit_seconds) / len(self.unit_seconds) if self.unit_seconds else self.estimate_s
        return max(0.0, (self.total - self.done - fraction_of_current) * per)

    def say(self, text: str, fraction: float = 0.0) -> None:
        """Print one progress line."""
        elapsed = time.monotonic() - self.start
        print(f"[study] {self.label} | {text} | elapsed {elapsed / 60:.1f} min | left ~{self.left_s(fraction) / 60:.0f}"
              f" min", file=self.stream, flush=True)

    def on_line(self, line: str) -> None:
        """Pass-through of the trainer's step lines (at most one progress line every 5 s)."""
        match = STEP_LINE.search(line)
        if match and time.monotonic() - self._last > 5:
            self._last = time.monotonic()
            step, total = int(match.group(1)), int(match.group(2))
            self.say(f"step {step}/{total}", fraction=step / max(total, 1))


def _python() -> list[str]:
    return [sys.executable]


def train_command(cfg, run: Run) -> list[str]:
    """The trainer command of a run (``trainer_command`` replaces ``python -m verl_resrl.main_ppo`` in tests)."""
    base = list(cfg.trainer_command) if cfg.get("trainer_command") else [*_python(), "-m", "verl_resrl.main_ppo"]
    return [*base, f"+recipe={run.recipe}", *run.overrides]


def eval_command(cfg, model_path: str, out_dir: str, name: str, benchmarks: list[str]) -> list[str]:
    """The eval CLI on one model; every eval of the study shares these settings."""
    ev = cfg.eval
    cmd = [*_python(), "-m", "verl_resrl.eval", f"model_path={model_path}", f"benchmarks=[{','.join(benchmarks)}]",
           f"output_dir={out_dir}", f"run_name={name}", f"n={ev.n}", "log_probs=true",
           f"sampling.temperature={ev.temperature}", f"sampling.max_new_tokens={ev.max_new_tokens}"]
    return cmd + [str(o) for o in ev.get("overrides") or []]


def benchmark_fingerprints(benchmarks: list[str]) -> set[str]:
    """The eval CLI's fingerprint of each benchmark file (its prompts and answers), as its results record them."""
    from verl_resrl.eval.runner import load_benchmark

    return {load_benchmark(path, None).fingerprint for path in benchmarks}


def _eval(cfg, model_path: str, out_dir: str, name: str, benchmarks, num_prompts, fingerprints: set[str],
          progress: Progress) -> None:
    """Run one eval unless its results are complete; raise when it fails."""
    done, reason = eval_status(out_dir, model_path, cfg.eval.n, num_prompts, fingerprints)
    if done:
        progress.say(f"eval {name}: already complete")
        return
    progress.say(f"eval {name} (n={cfg.eval.n}): {reason}")
    cmd = eval_command(cfg, model_path, out_dir, name, benchmarks)
    code = run_child(cmd, os.path.join(out_dir, "eval.log"), cfg.eval_timeout_s)
    if code != 0:
        raise RuntimeError(f"eval of {name} exited with {code}; log: {os.path.join(out_dir, 'eval.log')}")
    done, reason = eval_status(out_dir, model_path, cfg.eval.n, num_prompts, fingerprints)
    if not done:
        raise RuntimeError(f"eval of {name} finished but its outputs are incomplete: {reason}")


def _train(cfg, run: Run, progress: Progress) -> None:
    """Train one run from scratch (partial outputs of a killed attempt removed first)."""
    done, reason = training_status(run)
    if done:
        progress.say("training already complete")
        return
    progress.say(f"training ({reason})")
    if os.path.exists(run.run_dir):
        shutil.rmtree(run.run_dir)
    env = dict(os.environ, TENSORBOARD_DIR=os.path.join(run.run_dir, "tensorboard"))
    log = os.path.join(run.run_dir, "train.log")
    code = run_child(train_command(cfg, run), log, cfg.run_timeout_s, progress.on_line, env)
    if code != 0:
        raise RuntimeError(f"training run {run.name} exited with {code}; log: {log}")
    done, reason = training_status(run)
    if not done:
        raise RuntimeError(f"training run {run.name} exited 0 but its outputs are incomplete: {reason}")


def execute(cfg, plan: Plan, benchmarks: list[str], warmstart_model: str | None, num_prompts) -> None:
    """Warm-start eval, then every run (train + eval) in plan order; interrupted cleanly by SIGTERM."""
    def interrupt(signum, _frame):
        raise StudyInterrupted(f"signal {signum}")

    fingerprints = benchmark_fingerprints(benchmarks)  # read once: the benchmark files do not change in a study
    previous = signal.signal(signal.SIGTERM, interrupt)
    progress = Progress(len(plan.runs), float(cfg.estimate.run_s))
    try:
        if warmstart_model:
            progress.label = WARMSTART
            _eval(cfg, warmstart_model, plan.warmstart_eval_dir, WARMSTART, benchmarks, num_prompts, fingerprints,
                  progress)
        for i, run in enumerate(plan.runs, 1):
            progress.label = f"run {i}/{len(plan.runs)} {run.name}"
            started = time.monotonic()
            skipped = training_status(run)[0] and eval_status(run.eval_dir, run.actor_dir, cfg.eval.n,
                                                              num_prompts, fingerprints)[0]
            _train(cfg, run, progress)
            _eval(cfg, run.actor_dir, run.eval_dir, run.name, benchmarks, num_prompts, fingerprints, progress)
            progress.done += 1
            if not skipped:  # a skipped run says nothing about how long a run takes
                progress.unit_seconds.append(time.monotonic() - started)
    finally:
        signal.signal(signal.SIGTERM, previous)
