"""Throughput of VerifierPool with 1 and 2 workers on a fixed mixed workload, the scaling ratio, p99 latency.

Run: ``timeout 900 .venv/bin/python benchmarks/verifier_pool.py [--timeout-s 2] [--repeats 1]``

The workload is deterministic: math answers in several notations (right and wrong), short stdin/stdout programs,
and a few hostile items (an interruptible sympy blow-up, an infinite loop, a sleeper) that must each cost at most
their timeout. Both pool sizes run in the same process on the same private Ray cluster, one after the other, so the
ratio compares like with like. On a 2-core host the second worker shares the cores with the driver and Ray, so a
ratio well below 2 is expected there.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time

MATH_CASES = [
    (r"\boxed{\frac{1}{2}}", "0.5"), (r"\boxed{0.3}", r"\frac{1}{3}"), ("Answer: 1,000", "1000"),
    (r"\boxed{\sqrt{2}/2}", r"\frac{\sqrt{2}}{2}"), (r"\boxed{[1, 2)}", "[1,2)"), (r"\boxed{x^2+2x+1}", "(x+1)^2"),
    (r"\boxed{\{1,2,3\}}", r"\{3,2,1\}"), ("Answer: 17", "18"), (r"\boxed{30^\circ}", "30"), ("no answer", "4"),
    (r"\boxed{\begin{pmatrix}1&2\\3&4\end{pmatrix}}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}"),
    (r"\boxed{2\sqrt{3}}", r"\sqrt{12}"),
]
PROGRAMS = [
    ("a, b = map(int, input().split())\nprint(a + b)", [("1 2", "3"), ("5 7", "12")]),
    ("print(input()[::-1])", [("abc", "cba"), ("xy", "yx")]),
    ("n = int(input())\nprint(sum(range(n + 1)))", [("10", "55"), ("100", "5050")]),
    ("print(int(input()) * 2)", [("4", "9")]),
]
HOSTILE = [
    {"kind": "math", "response": r"\boxed{(x+y+z+1)^{40}}", "ground_truth": "(x+y+z+2)^{40}"},
    {"kind": "code", "program": "while True:\n    pass", "tests": [{"input": "", "output": "1"}]},
    {"kind": "code", "program": "import time\ntime.sleep(3600)", "tests": [{"input": "", "output": "1"}]},
]


def workload(copies: int) -> list[dict]:
    """``copies`` rounds of the math and code cases plus the hostile items once per round, interleaved."""
    items = []
    for _ in range(copies):
        items += [{"kind": "math", "response": r, "ground_truth": g} for r, g in MATH_CASES]
        items += [{"kind": "code", "program": p, "tests": [{"input": i, "output": o} for i, o in t]}
                  for p, t in PROGRAMS]
        items += HOSTILE
    return items


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(v for v in values if not math.isnan(v))
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def run(num_workers: int, items: list[dict], timeout_s: float) -> dict:
    """Score ``items`` once (after a warm-up batch) and return throughput and latency figures."""
    from verl_resrl.rewards.pool import VerifierPool

    with VerifierPool(num_workers=num_workers, timeout_s=timeout_s) as pool:
        pool.score_batch(items[: 2 * num_workers])  # warm-up: every actor has scored once
        start = time.monotonic()
        results = pool.score_batch(items)
        wall = time.monotonic() - start
        latencies = list(pool.last_latency_s)
    hostile = [lat for item, lat in zip(items, latencies) if item in HOSTILE]
    return {
        "items_per_s": len(items) / wall,
        "wall_s": wall,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "hostile_max_s": max(hostile),
        "reasons": sorted({r["reason"] for r in results}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout-s", type=float, default=2.0, help="per-item budget of the pool")
    parser.add_argument("--copies", type=int, default=3, help="rounds of the fixed workload")
    args = parser.parse_args()

    import ray

    temp_dir = tempfile.mkdtemp(prefix="resrl-ray-bench-")
    ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    try:
        items = workload(args.copies)
        print(f"workload: {len(items)} items ({len(HOSTILE) * args.copies} hostile), timeout {args.timeout_s}s, "
              f"host CPUs {os.cpu_count()}")
        rows = {n: run(n, items, args.timeout_s) for n in (1, 2)}
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    for n, row in rows.items():
        print(f"workers={n}: {row['items_per_s']:.2f} items/s (wall {row['wall_s']:.1f}s), "
              f"latency p50 {row['p50_s']:.3f}s p99 {row['p99_s']:.3f}s, "
              f"hostile max {row['hostile_max_s']:.2f}s (timeout {args.timeout_s}s), reasons {row['reasons']}")
    print(f"scaling ratio (2 workers / 1 worker throughput): {rows[2]['items_per_s'] / rows[1]['items_per_s']:.2f}")


if __name__ == "__main__":
    main()
