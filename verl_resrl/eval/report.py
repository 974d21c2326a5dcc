"""Benchmark metrics from stored samples, and the outputs: JSON, a markdown table, Pass@k plots (several runs).

Metric keys of one benchmark (all means over prompts; n = samples per prompt used):
``avg@{n}`` mean accuracy; ``avg@16`` when n >= 16 (the same mean: Avg@16's expectation is the per-sample
accuracy, and the mean over all n samples is its lowest-variance unbiased estimate); ``pass@{k}`` unbiased (Chen et
al. 2021) for k = 1, 2, 4, ..., n; ``maj@{n}``; ``distinct_answers``; ``distinct_1`` / ``distinct_2`` (word n-grams
of the responses, pooled per prompt); ``mean_token_entropy`` when log-probs were recorded; ``mean_response_tokens``;
``truncated_fraction`` (finish_reason "length"); ``no_answer_fraction``; ``num_prompts``; ``n``.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from verl_resrl.eval.metrics import default_ks, distinct_answers, distinct_n, maj_at_k, pass_at_k_array
from verl_resrl.eval.samples import SampleRecord

AVG_REPORTED_K = 16  # the paper's headline metric is Avg@16


def benchmark_metrics(samples: dict[int, list[SampleRecord]], n: int, ks: list[int] | None = None) -> dict:
    """Metrics of one benchmark from ``n`` samples per prompt (the first n by sample index)."""
    if not samples:
        raise ValueError("no samples to score")
    short = {p: len(s) for p, s in samples.items() if len(s) < n}
    if short:
        first = next(iter(short.items()))
        raise ValueError(f"{len(short)} prompts have fewer than n={n} samples (prompt {first[0]}: {first[1]})")
    groups = [samples[p][:n] for p in sorted(samples)]
    correct = np.array([[r.score > 0 for r in g] for g in groups], dtype=bool)
    c_per = correct.sum(axis=1)
    n_per = np.full(len(groups), n)
    metrics: dict[str, float] = {"num_prompts": len(groups), "n": n, f"avg@{n}": float(correct.mean())}
    if n >= AVG_REPORTED_K:
        metrics[f"avg@{AVG_REPORTED_K}"] = float(correct.mean())
    for k in ks or default_ks(n):
        metrics[f"pass@{k}"] = float(pass_at_k_array(n_per, c_per, k).mean())
    answers = [[r.answer for r in g] for g in groups]
    metrics[f"maj@{n}"] = float(np.mean([maj_at_k(a, c) for a, c in zip(answers, correct)]))
    metrics["distinct_answers"] = float(np.mean([distinct_answers(a) for a in answers]))
    for order in (1, 2):
        words = [[r.response.split() for r in g] for g in groups]
        metrics[f"distinct_{order}"] = float(np.mean([distinct_n(w, order) for w in words]))
    records = [r for g in groups for r in g]
    tokens = sum(r.num_tokens for r in records)
    if all(r.neg_log_prob_sum is not None for r in records) and tokens > 0:
        metrics["mean_token_entropy"] = float(sum(r.neg_log_prob_sum for r in records) / tokens)
    metrics["mean_response_tokens"] = float(tokens / len(records))
    metrics["truncated_fraction"] = float(np.mean([r.finish_reason == "length" for r in records]))
    metrics["no_answer_fraction"] = float(np.mean([r.answer is None for r in records]))
    return metrics


def pass_curve(metrics: dict) -> tuple[list[int], list[float]]:
    """(k values, Pass@k) in increasing k, read from a metrics dict."""
    ks = sorted(int(key.split("@")[1]) for key in metrics if key.startswith("pass@"))
    return ks, [metrics[f"pass@{k}"] for k in ks]


def file_stem(name: str) -> str:
    """A benchmark name usable as a file name (data sources such as "resrl_tiny/arith" hold slashes)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_json(obj, path: str) -> None:
    """Write ``obj`` as indented JSON (parent folders created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def _avg_key(metrics: dict) -> str:
    """The Avg column of a benchmark: Avg@16 when available, else Avg@n."""
    return f"avg@{AVG_REPORTED_K}" if f"avg@{AVG_REPORTED_K}" in metrics else f"avg@{metrics['n']}"


def markdown_table(runs: dict[str, dict[str, dict]]) -> str:
    """Rows (run, benchmark); columns Avg@16 (else Avg@n), Pass@1..Pass@max k, distinct answers; accuracies in %."""
    all_ks = sorted({k for bench in runs.values() for m in bench.values() for k in pass_curve(m)[0]})
    avg_keys = {_avg_key(m) for bench in runs.values() for m in bench.values()}
    avg_header = avg_keys.pop().replace("avg", "Avg") if len(avg_keys) == 1 else "Avg@n"
    header = ["run", "benchmark", avg_header, *[f"Pass@{k}" for k in all_ks], "distinct answers"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run, benches in runs.items():
        for bench, m in benches.items():
            avg_key = _avg_key(m)
            avg = f"{100 * m[avg_key]:.1f}" + ("" if avg_header != "Avg@n" else f" (n={m['n']})")
            cells = [run, bench, avg]
            cells += [f"{100 * m[f'pass@{k}']:.1f}" if f"pass@{k}" in m else "" for k in all_ks]
            cells.append(f"{m['distinct_answers']:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_pass_at_k(runs: dict[str, dict[str, dict]], path: str, benchmarks: list[str] | None = None) -> None:
    """One panel per benchmark, one Pass@k curve per run (x: k on a log2 axis, y: Pass@k in percent)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters
    import matplotlib.pyplot as plt

    names = benchmarks or sorted({b for benches in runs.values() for b in benches})
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, bench in zip(axes.flat, names):
        for run, benches in runs.items():
            if bench in benches:
                ks, values = pass_curve(benches[bench])
                ax.plot(ks, [100 * v for v in values], marker="o", markersize=3, label=run)
        ax.set_xscale("log", base=2)
        ax.set_title(bench)
        ax.set_xlabel("k")
        ax.set_ylabel("Pass@k (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_run(output_dir: str) -> dict[str, dict]:
    """Metrics by benchmark of an earlier eval run (its ``results.json``)."""
    path = os.path.join(output_dir, "results.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no results.json in {output_dir}: not an eval output folder")
    with open(path) as f:
        return json.load(f)["benchmarks"]


def write_reports(runs: dict[str, dict[str, dict]], out_dir: str) -> dict[str, str]:
    """The markdown table and the Pass@k plots (all benchmarks, and one per benchmark) of ``runs``."""
    paths = {"table": os.path.join(out_dir, "results.md"), "plot": os.path.join(out_dir, "pass_at_k.png")}
    with open(paths["table"], "w") as f:
        f.write(markdown_table(runs))
    plot_pass_at_k(runs, paths["plot"])
    for bench in sorted({b for benches in runs.values() for b in benches}):
        paths[f"plot:{bench}"] = os.path.join(out_dir, f"pass_at_k_{file_stem(bench)}.png")
        plot_pass_at_k(runs, paths[f"plot:{bench}"], benchmarks=[bench])
    return paths
