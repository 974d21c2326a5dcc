"""``<out_dir>/report.md`` and its PNGs: per-method mean +- sd over seeds, paired differences with two-way bootstrap
intervals, Pass@k curves, training curves, ResRL's weights, and a verdict that claims only what the intervals allow.

The verdict checks the paper's orderings one by one: a claim is *supported* when the whole interval of the paired
difference lies on the claimed side of 0, *contradicted* when it lies on the other side, and *not resolved*
otherwise. Nothing else is concluded.
"""

from __future__ import annotations

import os
import time

import numpy as np

from verl_resrl.study import plots
from verl_resrl.study.outputs import eval_status
from verl_resrl.study.plan import WARMSTART
from verl_resrl.study.stats import Interval, describe, paired_bootstrap, seed_mean_sd
from verl_resrl.study.tables import eval_columns, mean_curve, stack, training_curves


def metric_list(n: int, ks) -> list[tuple[str, str, float]]:
    """(column, label, display scale) of the report's metrics; accuracies in percent."""
    ks = [k for k in dict.fromkeys([*ks, n]) if k <= n]
    avg = "Avg@16" if n >= 16 else f"Avg@{n}"
    return ([("avg", avg, 100.0)] + [(f"pass@{k}", f"Pass@{k}", 100.0) for k in ks]
            + [("distinct", "distinct answers", 1.0), ("entropy", "token entropy", 1.0)])


def collect(cfg, plan):
    """({method: {seed: {bench: columns}}}, warm-start columns or None, names of runs without a finished eval)."""
    evals, missing = {}, []
    for run in plan.runs:
        if eval_status(run.eval_dir, run.actor_dir, cfg.eval.n, None)[0]:
            evals.setdefault(run.method, {})[run.seed] = eval_columns(run.eval_dir, cfg.eval.n)
        else:
            missing.append(run.name)
    warm = None
    if os.path.exists(os.path.join(plan.warmstart_eval_dir, "results.json")):
        warm = eval_columns(plan.warmstart_eval_dir, cfg.eval.n)
    return evals, warm, missing


def _fmt(mean: float, sd: float, scale: float) -> str:
    return f"{scale * mean:.1f}" + ("" if np.isnan(sd) else f" ± {scale * sd:.1f}") if scale == 100 else \
        f"{mean:.2f}" + ("" if np.isnan(sd) else f" ± {sd:.2f}")


def summary_table(bench: str, evals, warm, metrics) -> list[str]:
    """Rows: methods (mean ± sd over seeds) and the warm start (one model: no sd)."""
    lines = ["| method | seeds | " + " | ".join(label for _, label, _ in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    rows = [(m, [by_seed[s][bench] for s in sorted(by_seed)]) for m, by_seed in evals.items()]
    if warm is not None:
        rows.append((WARMSTART, [warm[bench]]))
    for method, runs in rows:
        cells = []
        for col, _, scale in metrics:
            table = stack(runs, col)
            cells.append("n/a" if np.isnan(table).any() else _fmt(*seed_mean_sd(table), scale))
        seeds = "-" if method == WARMSTART else str(len(runs))
        lines.append(f"| {method} | {seeds} | " + " | ".join(cells) + " |")
    return lines


def paired(evals, warm, a: str, b: str, bench: str, col: str, draws: int, level: float) -> Interval | None:
    """A - B on the seeds both have (B may be the warm start, repeated for each seed), or None."""
    if a not in evals:
        return None
    if b == WARMSTART:
        if warm is None:
            return None
        seeds = sorted(evals[a])
        if tuple(warm[bench]["prompt"]) != tuple(evals[a][seeds[0]][bench]["prompt"]):
            raise ValueError(f"the warm-start eval and {a}'s evals of {bench} hold different prompt sets")
        right = np.repeat(stack([warm[bench]], col), len(seeds), axis=0)
    else:
        seeds = sorted(set(evals[a]) & set(evals.get(b, {})))
        if not seeds:
            return None
        right = stack([evals[b][s][bench] for s in seeds], col)
    left = stack([evals[a][s][bench] for s in seeds], col)
    if np.isnan(left).any() or np.isnan(right).any():
        return None
    return paired_bootstrap(left, right, draws=draws, level=level, seed=0)


def difference_table(bench, evals, warm, baselines, metrics, draws, level) -> list[str]:
    """Paired differences of every method against every baseline, one row per (method, baseline)."""
    lines = ["| method − baseline | " + " | ".join(label for _, label, _ in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for base in baselines:
        for method in evals:
            if method == base:
                continue
            cells = []
            for col, _, scale in metrics:
                iv = paired(evals, warm, method, base, bench, col, draws, level)
                cells.append("n/a" if iv is None else describe(iv, scale))
            lines.append(f"| {method} − {base} | " + " | ".join(cells) + " |")
    return lines


def claims(headline: str, n: int) -> list[tuple[str, str, str, int, str]]:
    """The paper's orderings as (A, B, column, claimed sign, sentence)."""
    return [
        (headline, "nsr", "avg", +1, f"{headline} beats NSR on Avg (paper: +9.4 Avg@16)"),
        (headline, "nsr", f"pass@{n}", +1, f"{headline} beats NSR on Pass@{n} (paper: +7.0 Pass@128)"),
        (headline, "grpo", "pass@1", +1, f"{headline} beats GRPO on Pass@1 (paper figure)"),
        (headline, "grpo", f"pass@{n}", +1, f"{headline} beats GRPO on Pass@{n} (paper figure)"),
        ("grpo", WARMSTART, f"pass@{n}", -1, f"GRPO loses Pass@{n} against the warm start"),
        (headline, WARMSTART, f"pass@{n}", -1, f"{headline} loses Pass@{n} against the warm start"),
        (headline, "grpo", "distinct", +1, f"{headline} keeps more distinct answers than GRPO (diversity)"),
    ]


SATURATED = 0.95
"""A warm-start Pass@k at or above this leaves a Pass@k claim little room: the verdict adds the largest k below it."""


def informative_k(warm, bench: str, n: int) -> int | None:
    """The largest k (1, 2, 4, ..., n) at which the warm start's mean Pass@k is below SATURATED; None without one."""
    from verl_resrl.eval.metrics import default_ks

    if warm is None or bench not in warm:
        return None
    below = [k for k in default_ks(n) if float(warm[bench][f"pass@{k}"].mean()) < SATURATED]
    return max(below) if below else None


def verdict(evals, warm, bench, headline, n, draws, level) -> list[str]:
    """One line per claim: supported / contradicted / not resolved, with the interval."""
    lines, todo = [], claims(headline, n)
    far = informative_k(warm, bench, n)
    if far is not None and far < n:  # Pass@n saturated at the warm start: the far claims again where there is room
        lines.append(f"- The warm start's Pass@{n} is {100 * float(warm[bench][f'pass@{n}'].mean()):.1f}: at k = {n} "
                     f"the curves are saturated on this held-out set, so the Pass@{n} claims are also checked at "
                     f"k = {far}, the largest k where it is below {100 * SATURATED:.0f}.")
        todo += [c for c in claims(headline, far) if c[2] == f"pass@{far}" and far != 1]
    for a, b, col, sign, sentence in todo:
        iv = paired(evals, warm, a, b, bench, col, draws, level)
        if iv is None:
            lines.append(f"- {sentence}: not tested ({a} or {b} has no finished eval)")
            continue
        scale = 100.0 if col != "distinct" else 1.0
        status = "supported" if iv.sign == sign else "contradicted" if iv.sign == -sign else "not resolved"
        lines.append(f"- {sentence}: **{status}** — {a} − {b} at {col}: {describe(iv, scale)}, "
                     f"{iv.seeds} seed(s) × {iv.prompts} prompts")
    return lines


def _curves(evals, warm, bench, n, draws, level):
    """Per method: ks, mean Pass@k, band low/high (two-way bootstrap of the mean); the warm start without band."""
    from verl_resrl.eval.metrics import default_ks

    ks, out = default_ks(n), {}
    for method, by_seed in evals.items():
        runs = [by_seed[s][bench] for s in sorted(by_seed)]
        ivs = [paired_bootstrap(stack(runs, f"pass@{k}"), np.zeros((len(runs), len(runs[0]["c"]))), draws=draws,
                                level=level) for k in ks]
        out[method] = (ks, [i.diff for i in ivs], [i.low for i in ivs], [i.high for i in ivs])
    if warm is not None:
        mean = [float(warm[bench][f"pass@{k}"].mean()) for k in ks]
        out[WARMSTART] = (ks, mean, mean, mean)
    return out


def _training(plan) -> dict:
    """method -> {curve key -> (steps, mean, sd)} over the seeds with a metrics file."""
    per_method: dict[str, list[dict]] = {}
    for run in plan.runs:
        path = os.path.join(run.run_dir, "metrics.jsonl")
        if os.path.exists(path):
            per_method.setdefault(run.method, []).append(training_curves(path))
    out = {}
    for method, curves in per_method.items():
        keys = sorted(set.intersection(*[set(c) for c in curves]))
        out[method] = {k: mean_curve([c[k] for c in curves]) for k in keys}
    return out


def write_report(cfg, plan) -> str:
    """Write report.md and the PNGs under the study's out_dir; returns the report's path."""
    n, rep = cfg.eval.n, cfg.report
    metrics = metric_list(n, list(rep.ks))
    evals, warm, missing = collect(cfg, plan)
    out = plan.out_dir
    lines = ["# Method study", "", f"Written {time.strftime('%Y-%m-%d %H:%M %Z')} by `python -m verl_resrl.study`.",
             f"Grid: {', '.join(plan.methods())} × seeds {plan.seeds()}, {cfg.steps} steps each; eval: n={n} samples "
             f"per prompt at temperature {cfg.eval.temperature}.",
             f"Intervals: {round(100 * rep.level)}% percentile intervals of the paired mean difference, bootstrap "
             f"({rep.draws} draws) resampling seeds and prompts independently; accuracies in points of percent.", ""]
    if missing:
        lines += [f"**Incomplete:** {len(missing)} of {len(plan.runs)} runs have no finished eval "
                  f"({', '.join(missing)}); the numbers below use the finished ones only.", ""]
    if evals and min(len(s) for s in evals.values()) < 2:
        lines += ["With one seed per method the intervals cover prompt sampling only, not training-seed noise.", ""]
    benches = sorted({b for by_seed in evals.values() for cols in by_seed.values() for b in cols})
    for bench in benches:
        lines += [f"## {bench}", "", "### Per method (mean ± sd over seeds)", ""]
        lines += summary_table(bench, evals, warm, metrics) + [""]
        baselines = [b for b in rep.baselines if b in evals] + ([WARMSTART] if warm is not None else [])
        lines += ["### Paired differences", ""]
        lines += difference_table(bench, evals, warm, baselines, metrics, rep.draws, rep.level) + [""]
        png = plots.plot_pass_curves(_curves(evals, warm, bench, n, min(rep.draws, 2000), rep.level),
                                     f"{bench}: Pass@k (mean over seeds, 95% band)",
                                     os.path.join(out, f"pass_at_k_{bench.replace('/', '_')}.png"))
        lines += [f"![Pass@k]({os.path.basename(png)})", "", "### Verdict", ""]
        lines += verdict(evals, warm, bench, rep.headline, n, rep.draws, rep.level) + [""]
    training = _training(plan)
    if training:
        lines += ["## Training", "", f"![training]({os.path.basename(plots.plot_training(training, os.path.join(out, 'training.png')))})", ""]
        weights = plots.plot_weights(training, os.path.join(out, "resrl_weights.png"))
        if weights:
            lines += ["ResRL's negative-token weights over training (the resrl/weight* metrics, mean over seeds):", "",
                      f"![weights]({os.path.basename(weights)})", ""]
    path = os.path.join(out, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path
