"""ResRL token weights (arXiv 2605.00380, "Negative Sample Projection Residual RL"), in pure torch.

Read beside the paper; equation numbers follow docs/algorithm.md (the reference setting: docs/reference.md):

  (1) per prompt group, a rank-k basis V_k of the layer-normalised, centred hidden states of its POSITIVE tokens;
  (2) each NEGATIVE token's projection residual  R = ||h_c - V_k V_k^T h_c||^2 / d;
  (3) its weight  w = xi + (1 - xi) * clip((R - Q_lo) / (Q_hi - Q_lo), 0, 1), quantiles over the group's negatives;
  (4) advantages entering the loss: lambda * A on positive rollouts, w * A on negative rollouts.

Groups are processed together (stacked and zero-padded), a chunk at a time, so that no PCA runs per group in a
Python loop. Nothing here imports verl: the trainer integration lives in ``verl_resrl.workers``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Hashable, Sequence

import torch
import torch.nn.functional as F

LN_EPS = 1e-5  # layer-norm epsilon of spec eq. (1)
DEGENERATE_SPREAD = 1e-5  # Q_hi - Q_lo below this: every negative token gets (xi + 1) / 2 (spec eq. 3)


@dataclass(frozen=True)
class ResRLConfig:
    """Knobs of ResRL. Defaults are the reference code's (arXiv 2605.00380; reference names in brackets)."""

    rank: int = 64
    """k, the rank of the positive subspace; the effective rank is min(rank, rows - 1, d). [rank 64]"""
    max_pos_tokens: int = 4096
    """Positive tokens per group above this are subsampled uniformly without replacement. [max positive tokens]"""
    q_low: float = 0.2
    """Lower residual quantile Q_lo over the group's negative tokens (eq. 3). [quantile 0.2]"""
    q_high: float = 0.8
    """Upper residual quantile Q_hi over the group's negative tokens (eq. 3). [quantile 0.8]"""
    min_weight: float = 0.1
    """xi: the weight of a negative token inside the positive span; weights lie in [xi, 1]. [min weight 0.1]"""
    pos_weight: float = 0.1
    """lambda: scale of positive advantages, as in W-REINFORCE (arXiv 2506.01347). [positive weight 0.1]"""
    pca_niter: int = 4
    """Power iterations of the randomised PCA (reference: 4). Unused by the exact SVD."""
    min_pos_tokens: int = 4
    """Groups with fewer positive tokens are skipped: all their weights stay 1."""
    seed: int = 0
    """Seed of the positive-token subsample and the randomised PCA; mixed with each group id's hash."""
    pca_method: str = "randomized"
    """"randomized" (reference: randomised PCA) or "exact" (full SVD: more precise, slower for large d)."""
    pca_oversample: int = 8
    """Extra random directions of the randomised range finder (Halko et al. 2011); not a paper knob."""
    group_chunk: int = 32
    """Groups stacked per batched PCA; bounds peak memory (chunk x max_pos_tokens x d floats)."""

    def __post_init__(self):
        checks = {
            "rank": self.rank >= 1,
            "max_pos_tokens": self.max_pos_tokens >= 2,
            "q_low": 0.0 <= self.q_low < self.q_high,
            "q_high": self.q_low < self.q_high <= 1.0,
            "min_weight": 0.0 <= self.min_weight <= 1.0,
            "pos_weight": self.pos_weight >= 0.0,
            "pca_niter": self.pca_niter >= 0,
            "min_pos_tokens": self.min_pos_tokens >= 2,
            "pca_method": self.pca_method in ("randomized", "exact"),
            "pca_oversample": self.pca_oversample >= 0,
            "group_chunk": self.group_chunk >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"ResRLConfig: invalid {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


def group_index(group_ids: Sequence[Hashable] | torch.Tensor) -> tuple[torch.Tensor, list]:
    """Map group ids (prompt uids) to 0..G-1 in order of first appearance; returns (index (B,), unique ids)."""
    ids = group_ids.tolist() if isinstance(group_ids, torch.Tensor) else list(group_ids)
    slot: dict = {}
    index = [slot.setdefault(g, len(slot)) for g in ids]
    return torch.tensor(index, dtype=torch.long), list(slot)


def stable_group_seed(group_id: Hashable, seed: int) -> int:
    """A seed that depends only on the group id and the config seed (not on batch layout or PYTHONHASHSEED)."""
    return (zlib.crc32(repr(group_id).encode()) * 1_000_003 + seed) % (2**63 - 1)


def layer_norm_rows(x: torch.Tensor) -> torch.Tensor:
    """Layer-normalise each row over d, float32, no affine parameters (spec eq. 1)."""
    return F.layer_norm(x.float(), (x.shape[-1],), eps=LN_EPS)


def _pack(values: torch.Tensor, slot: torch.Tensor, num_slots: int):
    """Scatter rows (N, d) into zero-padded (num_slots, width, d) by slot; returns (packed, valid, position of row)."""
    counts = torch.bincount(slot, minlength=num_slots)
    width = max(int(counts.max()), 1)
    order = torch.argsort(slot, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.empty_like(slot)
    pos[order] = torch.arange(slot.numel(), device=slot.device) - starts[slot[order]]
    packed = values.new_zeros(num_slots, width, values.shape[-1])
    valid = torch.zeros(num_slots, width, dtype=torch.bool, device=values.device)
    packed[slot, pos] = values
    valid[slot, pos] = True
    return packed, valid, pos


def subspace_basis(centred: torch.Tensor, ranks: torch.Tensor, config: ResRLConfig, seeds: list[int]):
    """Top-k right singular vectors per group of zero-padded centred rows (G, M, d) -> ((G, d, K), ranks used).

    k per group is min(ranks, numerical rank): singular values below sigma_max * max(M, d) * eps (float32) are
    noise, and their directions arbitrary; keeping them (spec: k = min(64, rows - 1, d) whatever the spectrum) makes
    weights jump with 1e-6 changes of the states when the positives span fewer than k dimensions, e.g. when correct
    answers repeat each other's tokens. Columns beyond a group's k are zeroed: V V^T is its rank-k projector.
    """
    G, M, d = centred.shape
    K = int(ranks.max())
    if config.pca_method == "exact":
        _, sigma, vh = torch.linalg.svd(centred, full_matrices=False)
        basis, sigma = vh.transpose(1, 2)[:, :, :K], sigma[:, :K]
    else:
        basis, sigma = _randomized_basis(centred, K, config, seeds)
    tol = sigma[:, :1] * max(M, d) * torch.finfo(torch.float32).eps
    ranks = torch.minimum(ranks, (sigma > tol).sum(1))
    keep = torch.arange(basis.shape[-1], device=centred.device)[None, :] < ranks[:, None]
    return basis * keep[:, None, :], ranks


def _randomized_basis(centred: torch.Tensor, K: int, config: ResRLConfig, seeds: list[int]):
    """Randomised range finder with power iterations (Halko et al. 2011), seeded per group, batched over groups.

    Returns the top-K right singular vectors (G, d, K) and their singular values (G, K).
    """
    G, M, d = centred.shape
    L = min(K + config.pca_oversample, d, M)
    probes = torch.stack(
        [torch.randn(d, L, generator=torch.Generator().manual_seed(s), dtype=torch.float32) for s in seeds]
    ).to(centred.device)
    q = torch.linalg.qr(centred @ probes).Q  # (G, M, L): range of X
    for _ in range(config.pca_niter):
        q = torch.linalg.qr(centred @ torch.linalg.qr(centred.transpose(1, 2) @ q).Q).Q
    small = q.transpose(1, 2) @ centred  # (G, L, d): X restricted to its range
    _, sigma, vh = torch.linalg.svd(small, full_matrices=False)
    return vh.transpose(1, 2)[:, :, :K], sigma[:, :K]


def residual_weights(residuals: torch.Tensor, valid: torch.Tensor, config: ResRLConfig) -> torch.Tensor:
    """Spec eq. (3): map padded residuals (G, N) to weights in [xi, 1] with the group's own quantiles."""
    xi = config.min_weight
    masked = residuals.masked_fill(~valid, float("nan"))
    q = torch.nanquantile(masked, torch.tensor([config.q_low, config.q_high], device=residuals.device), dim=1)
    q_lo, q_hi = q[0][:, None], q[1][:, None]
    spread = q_hi - q_lo
    scaled = ((residuals - q_lo) / spread.clamp_min(DEGENERATE_SPREAD)).clamp(0.0, 1.0)
    weights = xi + (1.0 - xi) * scaled
    return torch.where(spread < DEGENERATE_SPREAD, torch.full_like(weights, (xi + 1.0) / 2.0), weights)


def _select_positive_tokens(rows, times, row_keys, group_seed, limit):
    """Canonical order (row key, position), then a seeded uniform sample without replacement if over the limit."""
    order = torch.argsort(row_keys[rows] * (int(times.max()) + 1) + times)
    if order.numel() <= limit:
        return order
    perm = torch.randperm(order.numel(), generator=torch.Generator().manual_seed(group_seed))
    return order[perm[:limit].to(order.device)]


def _check_inputs(hidden, response_mask, group_ids, is_positive) -> None:
    """Shape and dtype checks with errors that name the offending argument."""
    if hidden.dim() != 3 or not hidden.is_floating_point():
        raise ValueError(f"hidden must be a float tensor (B, T, d), got {tuple(hidden.shape)} {hidden.dtype}")
    B, T, _ = hidden.shape
    if tuple(response_mask.shape) != (B, T):
        raise ValueError(f"response_mask must have shape {(B, T)}, got {tuple(response_mask.shape)}")
    if tuple(is_positive.shape) != (B,):
        raise ValueError(f"is_positive must have shape {(B,)}, got {tuple(is_positive.shape)}")
    if len(group_ids) != B:
        raise ValueError(f"group_ids must have {B} entries (one per row), got {len(group_ids)}")


class _Tally:
    """Per-chunk pieces of the diagnostics, reduced once at the end."""

    def __init__(self):
        self.weights, self.residuals, self.energy, self.ranks = [], [], [], []

    def summary(self) -> dict[str, float]:
        """Means and quantiles of what the weighted groups produced (NaN when nothing was weighted)."""
        out = {"neg_tokens_weighted": float(sum(w.numel() for w in self.weights))}
        qs = torch.tensor([0.1, 0.5, 0.9])
        for name, parts in (("weight", self.weights), ("residual", self.residuals)):
            flat = torch.cat(parts).float().cpu() if parts else torch.empty(0)
            vals = torch.quantile(flat, qs).tolist() if flat.numel() else [float("nan")] * 3
            out[f"{name}_mean"] = flat.mean().item() if flat.numel() else float("nan")
            out.update({f"{name}_q{round(q * 100)}": v for q, v in zip(qs.tolist(), vals)})
        out["energy_share_mean"] = torch.cat(self.energy).mean().item() if self.energy else float("nan")
        out["rank_mean"] = torch.cat(self.ranks).float().mean().item() if self.ranks else float("nan")
        return out


def _weight_chunk(hidden, tok, chunk, group_seeds, config, weights, tally) -> None:
    """Eqs. (1)-(3) for one chunk of eligible groups: basis from positives, weights written for negatives."""
    b, t, group, positive, row_keys = tok
    slot_of = torch.full((int(group.max()) + 1,), -1, dtype=torch.long, device=group.device)
    slot_of[chunk] = torch.arange(chunk.numel(), device=group.device)
    slot = slot_of[group]
    pos_sel = (positive & (slot >= 0)).nonzero().flatten()
    pos_sel = torch.cat([_subsample(pos_sel[slot[pos_sel] == s], tok, group_seeds[int(g)], config)
                         for s, g in enumerate(chunk.tolist())])
    x, x_valid, _ = _pack(layer_norm_rows(hidden[b[pos_sel], t[pos_sel]]), slot[pos_sel], chunk.numel())
    counts = x_valid.sum(1)
    mean = x.sum(1) / counts[:, None]
    centred = (x - mean[:, None, :]) * x_valid[..., None]
    ranks = torch.clamp(torch.clamp(counts - 1, max=config.rank), max=hidden.shape[-1])
    basis, ranks = subspace_basis(centred, ranks, config, [group_seeds[int(g)] for g in chunk.tolist()])
    neg_sel = (~positive & (slot >= 0)).nonzero().flatten()
    h, h_valid, h_pos = _pack(layer_norm_rows(hidden[b[neg_sel], t[neg_sel]]), slot[neg_sel], chunk.numel())
    h_c = (h - mean[:, None, :]) * h_valid[..., None]
    resid = h_c - (h_c @ basis) @ basis.transpose(1, 2)
    r = resid.pow(2).sum(-1) / hidden.shape[-1]
    w = residual_weights(r, h_valid, config)
    weights[b[neg_sel], t[neg_sel]] = w[slot[neg_sel], h_pos]
    tally.weights.append(w[h_valid])
    tally.residuals.append(r[h_valid])
    tally.energy.append((centred @ basis).pow(2).sum((1, 2)) / centred.pow(2).sum((1, 2)).clamp_min(1e-30))
    tally.ranks.append(ranks)


def _subsample(candidates: torch.Tensor, tok, group_seed: int, config: ResRLConfig) -> torch.Tensor:
    """One group's positive tokens, subsampled to max_pos_tokens in a layout-independent way."""
    if candidates.numel() <= config.max_pos_tokens:
        return candidates
    b, t, _, _, row_keys = tok
    keep = _select_positive_tokens(b[candidates], t[candidates], row_keys, group_seed, config.max_pos_tokens)
    return candidates[keep]


def resrl_token_weights(
    hidden: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable] | torch.Tensor,
    is_positive: torch.Tensor,
    config: ResRLConfig = ResRLConfig(),
    row_keys: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token ResRL weights (B, T) float32 and diagnostics; 1.0 wherever no negative-token weight applies.

    hidden (B, T, d): the state that produced each response token; response_mask (B, T) 0/1; group_ids: one
    hashable per row (the prompt uid); is_positive (B,) bool (sequence score > 0). row_keys (B,) int64, optional:
    a content key per rollout (e.g. a hash of its tokens) that makes the positive-token subsample independent of
    row order; without it the row index is used, so only groups over max_pos_tokens depend on the order.
    """
    _check_inputs(hidden, response_mask, group_ids, is_positive)
    B, T, _ = hidden.shape
    device = hidden.device
    gidx, uniq = group_index(group_ids)
    gidx, positive_rows = gidx.to(device), is_positive.bool().to(device)
    keys = row_keys.to(device).long() if row_keys is not None else torch.arange(B, device=device)
    b, t = response_mask.bool().nonzero(as_tuple=True)
    tok = (b, t, gidx[b], positive_rows[b], keys)
    G = len(uniq)
    pos_tokens = torch.bincount(gidx[b][positive_rows[b]], minlength=G)
    neg_tokens = torch.bincount(gidx[b][~positive_rows[b]], minlength=G)
    mixed = (torch.bincount(gidx[positive_rows], minlength=G) > 0) & (torch.bincount(gidx[~positive_rows], minlength=G) > 0)
    eligible = mixed & (pos_tokens >= config.min_pos_tokens) & (neg_tokens > 0)
    weights = torch.ones(B, T, dtype=torch.float32, device=device)
    seeds = [stable_group_seed(g, config.seed) for g in uniq]
    tally = _Tally()
    eligible_groups = eligible.nonzero().flatten()
    for chunk in eligible_groups.split(config.group_chunk) if eligible_groups.numel() else ():
        _weight_chunk(hidden, tok, chunk, seeds, config, weights, tally)
    stats = {
        "groups_total": float(G),
        "groups_mixed": float(mixed.sum()),
        "groups_skipped": float((mixed & ~eligible).sum()),
        "neg_tokens_mixed": float(neg_tokens[mixed].sum()),
        **tally.summary(),
    }
    stats["coverage"] = stats["neg_tokens_weighted"] / stats["neg_tokens_mixed"] if stats["neg_tokens_mixed"] else float("nan")
    return weights, stats


def apply_resrl(
    advantages: torch.Tensor, weights: torch.Tensor, is_positive: torch.Tensor, config: ResRLConfig = ResRLConfig()
) -> torch.Tensor:
    """Spec eq. (4): lambda * A on positive rollouts, w * A (per token) on negative rollouts."""
    if advantages.shape != weights.shape or is_positive.shape != advantages.shape[:1]:
        raise ValueError(
            f"apply_resrl: advantages {tuple(advantages.shape)}, weights {tuple(weights.shape)} and "
            f"is_positive {tuple(is_positive.shape)} must be (B, T), (B, T), (B,)"
        )
    scale = torch.where(is_positive.bool()[:, None], torch.full_like(weights, config.pos_weight), weights)
    return advantages * scale.to(advantages.dtype)
