"""The study's statistics, as pure functions of per-(seed, prompt) tables (no I/O, no verl import).

A *table* is an array of shape (seeds, prompts): one value per held-out prompt for each training seed of a method
(e.g. that prompt's unbiased Pass@k from its n samples). Every method is evaluated on the same prompts, and seed i
of every method uses the same training seed (``data.seed`` and the rollout seed), so two methods' tables are paired
cell by cell.

- :func:`seed_mean_sd`: the metric of each seed (mean over prompts), then their mean and sample sd (ddof=1) over
  seeds: the spread a rerun with another seed shows.
- :func:`paired_bootstrap`: the mean paired difference A - B and a percentile interval from a two-way bootstrap:
  each draw resamples seeds with replacement AND prompts with replacement (independently) and averages the
  differences over the resampled cells, so the interval covers both the training-seed noise and the choice of
  prompts. With one seed only the prompts vary (the interval then ignores seed noise; the report says so).
- :func:`per_prompt_pass_at_k`: unbiased Pass@k per prompt (Chen et al. 2021) from correct counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from verl_resrl.eval.metrics import pass_at_k_array

DEFAULT_DRAWS = 10_000
DEFAULT_LEVEL = 0.95


def _table(values, name: str = "table") -> np.ndarray:
    """A finite 2-D float array (seeds, prompts) with at least one cell."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty (seeds, prompts) table, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds non-finite values")
    return arr


def seed_mean_sd(values) -> tuple[float, float]:
    """(mean, sd) over seeds of the per-seed means over prompts; sd is nan with one seed."""
    per_seed = _table(values).mean(axis=1)
    sd = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else float("nan")
    return float(per_seed.mean()), sd


@dataclass(frozen=True)
class Interval:
    """A paired difference A - B with its bootstrap percentile interval."""

    diff: float
    low: float
    high: float
    level: float
    seeds: int
    prompts: int

    @property
    def sign(self) -> int:
        """+1 when the interval lies above 0, -1 below, 0 when it contains 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def bootstrap_means(diff, draws: int, seed: int) -> np.ndarray:
    """``draws`` bootstrap means of ``diff`` (seeds, prompts): seeds and prompts resampled independently."""
    d = _table(diff, "diff")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    rng = np.random.default_rng(seed)
    n_seeds, n_prompts = d.shape
    seed_idx = rng.integers(0, n_seeds, size=(draws, n_seeds))
    prompt_idx = rng.integers(0, n_prompts, size=(draws, n_prompts))
    # cell (draw, i, j) = d[seed_idx[draw, i], prompt_idx[draw, j]]; chunks bound the memory for large tables
    out = np.empty(draws)
    step = max(1, 2_000_000 // (n_seeds * n_prompts))
    for start in range(0, draws, step):
        s, p = seed_idx[start : start + step], prompt_idx[start : start + step]
        out[start : start + step] = d[s[:, :, None], p[:, None, :]].mean(axis=(1, 2))
    return out


def paired_bootstrap(a, b, draws: int = DEFAULT_DRAWS, level: float = DEFAULT_LEVEL, seed: int = 0) -> Interval:
    """Mean of A - B over all (seed, prompt) cells and its two-way bootstrap percentile interval."""
    a, b = _table(a, "a"), _table(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired tables must have one shape, got {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    means = bootstrap_means(a - b, draws, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float((a - b).mean()), float(low), float(high), level, a.shape[0], a.shape[1])


def per_prompt_pass_at_k(n, c, k: int) -> np.ndarray:
    """Unbiased Pass@k of each prompt from its sample count n and correct count c (arrays of equal shape)."""
    n, c = np.asarray(n), np.asarray(c)
    return pass_at_k_array(n.ravel(), c.ravel(), k).reshape(c.shape)


def describe(interval: Interval, scale: float = 100.0, unit: str = "") -> str:
    """``+x (95% CI a..b)`` with values multiplied by ``scale`` (points of percent for accuracies)."""
    pct = round(100 * interval.level)
    return (f"{scale * interval.diff:+.1f}{unit} ({pct}% CI {scale * interval.low:+.1f}..{scale * interval.high:+.1f}"
            f"{unit})")
