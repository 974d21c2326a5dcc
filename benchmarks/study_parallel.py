"""Is ``parallel: 2`` worth it? One tiny run alone (all cores), then two at once (cores shared out), side by side.

    python benchmarks/study_parallel.py [--steps 12] [--out /tmp/study_parallel]

Each run is the real trainer (``python -m verl_resrl.main_ppo +recipe=resrl_tiny``) under a hard timeout that kills
its process group. Prints the wall time of each phase, the throughput ratio (2 x alone / together) and the CPU.
The study's own default (verl_resrl/study/config/study/tiny.yaml) was chosen from this measurement
(docs/evaluation.md, "Time").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_flags() -> str:
    """The CPU's model name and its AVX-512 / AMX flags (timings depend on them)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown CPU"
    name = re.search(r"model name\s*:\s*(.*)", text)
    flags = sorted(set(re.findall(r"\b(avx512[a-z_0-9]*|amx[a-z_0-9]*|avx2)\b", text)))
    return f"{name.group(1) if name else 'unknown'}; {os.cpu_count()} cores; {' '.join(flags)}"


def start_run(out: str, name: str, seed: int, steps: int, threads: int) -> subprocess.Popen:
    """Start one tiny training run in its own process group."""
    run_dir = os.path.join(out, name)
    cmd = [sys.executable, "-m", "verl_resrl.main_ppo", "+recipe=resrl_tiny", f"trainer.total_training_steps={steps}",
           f"trainer.save_freq={steps}", "trainer.test_freq=1000", f"data.seed={seed}",
           f"actor_rollout_ref.rollout.seed={seed}", f"trainer.default_local_dir={run_dir}/ckpt",
           f"resrl_progress.out_dir={run_dir}"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=REPO)
    os.makedirs(run_dir, exist_ok=True)
    log = open(os.path.join(run_dir, "bench.log"), "w")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_all(procs: list[subprocess.Popen], timeout_s: float) -> None:
    """Wait for every run; on timeout kill every process group and fail."""
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                try:
                    os.killpg(p.pid, 9)
                except ProcessLookupError:
                    pass
            raise SystemExit(f"a run exceeded {timeout_s:.0f} s; logs under the --out folder")
        if proc.returncode != 0:
            raise SystemExit(f"a run exited with {proc.returncode}; logs under the --out folder")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", default="/tmp/study_parallel")
    parser.add_argument("--timeout-s", type=float, default=1200)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    started = time.monotonic()
    wait_all([start_run(args.out, "alone", 1, args.steps, cores)], args.timeout_s)
    alone = time.monotonic() - started
    started = time.monotonic()
    wait_all([start_run(args.out, f"pair{k}", k, args.steps, max(1, cores // 2)) for k in (1, 2)], args.timeout_s)
    together = time.monotonic() - started
    result = {"cpu": cpu_flags(), "steps": args.steps, "alone_s": round(alone, 1), "two_at_once_s": round(together, 1),
              "throughput_ratio": round(2 * alone / together, 2)}
    print(json.dumps(result))
    print(f"one run alone {alone:.0f} s; two at once {together:.0f} s; throughput x{2 * alone / together:.2f} "
          f"({result['cpu']})")


if __name__ == "__main__":
    main()
