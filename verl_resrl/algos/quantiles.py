"""Exact quantiles at any size, in pure torch (``torch.quantile`` refuses inputs over 2**24 elements).

Both functions use numpy's default ("linear") definition, the same as ``torch.quantile``: with the n values sorted,
v_0 <= ... <= v_{n-1}, and q (n - 1) = j + f (j an integer, 0 <= f < 1), the q-quantile is v_j + f (v_{j+1} - v_j).

* :func:`quantiles` (one flat tensor, e.g. every weighted token of a step): a full sort up to 2**20 values; above,
  each quantile's two order statistics are selected exactly with a sample bracket (Floyd & Rivest 1975):
  a seeded sample of ``SAMPLE`` values, sorted, gives bounds [a, b] around the wanted rank; one pass counts the values
  below a and keeps those in [a, b] (about 2 x ``MARGIN`` of them), and the answer is selected among those. The
  result is exact, not an estimate: the sample only decides which values are looked at. The bracket misses only if
  the sample's empirical CDF is more than ``MARGIN`` away from the data's somewhere, which by the
  Dvoretzky-Kiefer-Wolfowitz inequality (Massart 1990) has probability <= 2 exp(-2 SAMPLE MARGIN^2) ~ 4e-6; then
  ``torch.kthvalue`` over all values answers (still exact, only slower). Cost: a few passes over the values and no
  sort of all of them (3 x 10^7 values: well under a second on one CPU core, where a full sort takes ~5 s).
  The interpolation position q (n - 1) is taken in float64 (``torch.quantile`` takes it in the input's float32,
  which at 10^5 values and beyond already moves the result by up to ~1e-3 of a neighbour gap).
* :func:`segment_quantiles` (per group, e.g. eq. 3's Q_lo / Q_hi of every group at once): two stable sorts, exact
  at any size, including a single segment over 2**24 values.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

TORCH_QUANTILE_LIMIT = 2**24  # the largest input torch.quantile accepts
SORT_LIMIT = 2**20  # up to this many values, quantiles() sorts them all
SAMPLE = 2**16  # sample size of the selection bracket
MARGIN = 0.01  # half-width of the bracket, in probability


def _as_float(values: torch.Tensor) -> torch.Tensor:
    """float64 stays float64; everything else is computed in float32."""
    return values if values.dtype == torch.float64 else values.float()


def quantiles(values: torch.Tensor, qs: Sequence[float], sort_limit: int = SORT_LIMIT) -> list[float]:
    """Exact quantiles of all elements of ``values`` (any shape, any size); NaN for empty input or any NaN value.

    sort_limit: up to this many values a full sort answers; above, the bracketed selection (tests lower it to
    exercise that path on small inputs).
    """
    if any(not 0.0 <= q <= 1.0 for q in qs):
        raise ValueError(f"quantiles: every q must lie in [0, 1], got {list(qs)}")
    x = _as_float(values.detach().reshape(-1))
    n = x.numel()
    if n == 0 or bool(torch.isnan(x).any()):
        return [float("nan")] * len(qs)
    ordered = x.sort().values if n <= sort_limit else None
    sample = _sorted_sample(x) if ordered is None else None
    out = []
    for q in qs:
        pos = q * (n - 1)
        j = min(int(math.floor(pos)), n - 1)
        ranks = [j, min(j + 1, n - 1)]
        lo, hi = ordered[ranks].tolist() if ordered is not None else _order_statistics(x, ranks, sample)
        out.append(lo + (pos - j) * (hi - lo) if hi != lo else lo)
    return out


def _sorted_sample(x: torch.Tensor) -> torch.Tensor:
    """A seeded uniform sample (with replacement) of SAMPLE values, sorted; the seed only affects speed, not results."""
    gen = torch.Generator(device=x.device).manual_seed(0)
    idx = torch.randint(x.numel(), (SAMPLE,), generator=gen, device=x.device)
    return x[idx].sort().values


def _order_statistics(x: torch.Tensor, ranks: list[int], sample: torch.Tensor) -> list[float]:
    """The values of 0-based ``ranks`` (close together) of x in sorted order, exactly, via one sample bracket."""
    n, m = x.numel(), sample.numel()
    lo_i = min(math.floor((min(ranks) / n - MARGIN) * m), m - 1)  # the clamps only matter for MARGIN < 0
    hi_i = max(math.ceil((max(ranks) + 1) / n * m + MARGIN * m), 0)
    keep = torch.ones_like(x, dtype=torch.bool)
    below = 0
    if lo_i >= 0:
        a = sample[lo_i]
        below = int((x < a).sum())
        keep &= x >= a
    if hi_i < m:
        keep &= x <= sample[hi_i]
    inside = x[keep] if (lo_i >= 0 or hi_i < m) else x
    if all(below <= r < below + inside.numel() for r in ranks):
        return [torch.kthvalue(inside, r - below + 1).values.item() for r in ranks]
    return [torch.kthvalue(x, r + 1).values.item() for r in ranks]  # the bracket missed: exact, over all values


def segment_quantiles(
    values: torch.Tensor, segment: torch.Tensor, num_segments: int, qs: Sequence[float]
) -> torch.Tensor:
    """Exact quantiles of ``values`` (N,) within each segment id 0..num_segments-1 -> (len(qs), num_segments).

    Empty segments give NaN. The values are ordered by (segment, value) with two stable sorts, then each segment's
    quantiles are read at its own offsets: no padding to the largest segment and no size limit.
    """
    if values.dim() != 1 or segment.shape != values.shape:
        raise ValueError(f"segment_quantiles: values {tuple(values.shape)} and segment {tuple(segment.shape)} "
                         "must be equal 1-D shapes")
    x = _as_float(values)
    order = torch.argsort(x, stable=True)
    order = order[torch.argsort(segment[order], stable=True)]
    ordered = x[order]
    counts = torch.bincount(segment, minlength=num_segments)
    starts = torch.cumsum(counts, 0) - counts
    q = torch.tensor(list(qs), dtype=torch.float64, device=x.device)[:, None]
    pos = q * (counts - 1).clamp_min(0).double()[None, :]
    j = pos.floor().long()
    frac = (pos - j).to(x.dtype)
    last = (counts - 1).clamp_min(0)[None, :]
    top = max(ordered.numel() - 1, 0)
    lo = ordered[(starts + j).clamp(0, top)] if ordered.numel() else torch.zeros_like(frac)
    hi = ordered[(starts + torch.minimum(j + 1, last)).clamp(0, top)] if ordered.numel() else torch.zeros_like(frac)
    out = torch.where(hi == lo, lo, lo + frac * (hi - lo))  # equal neighbours (ties, infinities): that value
    return out.masked_fill(counts[None, :] == 0, float("nan"))
