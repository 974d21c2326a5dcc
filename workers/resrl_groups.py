"""ResRL token weights over WHOLE prompt groups, from one data-parallel rank's captured response hidden states.

The engine (``workers/resrl_engine.py``) captures, in the forward-only old-log-prob pass, the hidden state that
produced every response token of the rank's whole shard, then calls :func:`shard_weight_fields`. That function

1. finds the prompt groups (``uid``) of the shard and asks the other data-parallel ranks, with one small
   ``all_gather_object``, which groups are split across ranks (the trainer keeps mixed groups whole, so normally
   none are; when a batch cannot be packed whole, the split groups' rows are exchanged so the result stays exact);
2. runs ``verl_resrl.algos.resrl.resrl_token_weights`` ONCE PER GROUP over the group's complete rows, in a canonical
   row order (sorted by a hash of the response tokens). One group per call makes every group's arithmetic depend on
   nothing but its own rows, so the weights are bitwise the same for any micro-batch size, dynamic batching, balancing
   or data-parallel size (given the same hidden states);
3. returns the batch fields that travel on through verl's TransferQueue: per-token weights, the positive flag and a
   few per-row group diagnostics. The hidden states themselves never leave the worker.

Pure torch (plus torch.distributed): no verl import, so the trainer, the loss and the tests can use the field names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.distributed as dist

from verl_resrl.algos.resrl import ResRLConfig, resrl_token_weights

SETTINGS_KEY = "resrl_settings"
"""Key of the non-tensor entry (trainer -> worker, via ``KVBatchMeta.extra_info``) that switches capture on:
``{"hidden_layer": int, "config": dict of ResRLConfig fields}``."""
WEIGHTS_FIELD = "resrl_weights"
"""Per response token, float32, jagged like ``response_mask``: w on negative tokens of weighted groups, else 1."""
POSITIVE_FIELD = "resrl_positive"
"""Per row, float32 0/1: sequence score (sum of ``rm_scores``) > 0 (spec: Notation)."""
STATS_FIELD = "resrl_group_stats"
"""Per row, float32 (B, len(STATS_COLUMNS)): diagnostics of the row's group (NaN where the group was not weighted)."""
STATS_COLUMNS = ("weighted", "residual_q10", "residual_q50", "residual_q90", "energy_share", "rank")


def dense_rows(t: torch.Tensor) -> torch.Tensor:
    """A per-row field as a dense tensor: verl's TransferQueue hands (B, k) fields back as jagged (B, j) tensors."""
    return torch.stack(t.unbind()) if t.is_nested else t


def sequence_is_positive(rm_scores: torch.Tensor) -> torch.Tensor:
    """(B,) bool: a rollout is positive when its sequence score, the sum of its token scores, is > 0."""
    if rm_scores.is_nested:
        lengths = rm_scores.offsets().diff()
        rows = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
        sums = torch.zeros(len(lengths), dtype=torch.float64, device=lengths.device)
        sums.index_add_(0, rows.to(sums.device), rm_scores.values().double().to(sums.device))
        return sums > 0
    return rm_scores.double().sum(-1) > 0


def content_key(token_ids: torch.Tensor) -> int:
    """A 63-bit key of a response's token ids: orders a group's rows the same way whatever the batch layout."""
    data = token_ids.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


@dataclass
class RowRecord:
    """One rollout as the group computation needs it."""

    uid: str
    """Prompt group id (verl's ``uid`` field)."""
    key: int
    """content_key of the response tokens: the canonical order inside the group."""
    positive: bool
    """Sequence score > 0."""
    hidden: torch.Tensor
    """(r, d): the state that produced each response token (same shift as the log-probs)."""
    mask: torch.Tensor
    """(r,): verl's response_mask (1 = token counts)."""
    owner: tuple[int, int] = (0, 0)
    """(data-parallel rank, row index on that rank): where the row's weights go back to."""


def group_weights(members: list[RowRecord], config: ResRLConfig) -> dict[tuple[int, int], tuple[torch.Tensor, dict]]:
    """resrl_token_weights over one complete group; returns {owner: (weights (r,), group stats)}."""
    members = sorted(members, key=lambda m: m.key)
    n, width = len(members), max(int(m.hidden.shape[0]) for m in members)
    ref = members[0].hidden
    hidden = ref.new_zeros(n, max(width, 1), ref.shape[-1])
    mask = torch.zeros(n, max(width, 1), device=ref.device)
    for i, m in enumerate(members):
        r = m.hidden.shape[0]
        hidden[i, :r] = m.hidden.to(ref.device)
        mask[i, :r] = m.mask.to(ref.device, torch.float32)
    positive = torch.tensor([m.positive for m in members], device=ref.device)
    # row_keys: ranks in the canonical order (small ints: a raw 63-bit hash times (T+1) would overflow int64)
    weights, stats = resrl_token_weights(hidden, mask, [members[0].uid] * n, positive, config, torch.arange(n))
    return {m.owner: (weights[i, : m.hidden.shape[0]].float(), stats) for i, m in enumerate(members)}


def _is_mixed(members: list[RowRecord]) -> bool:
    """A group has both positive and negative rollouts (only such groups get residual weights)."""
    return any(m.positive for m in members) and not all(m.positive for m in members)


def exchange_split_groups(rows: list[RowRecord], dp_group) -> dict[str, list[RowRecord]]:
    """Rows that OTHER data-parallel ranks hold of the mixed groups this rank holds only part of.

    One all_gather_object of (uid, positive) per row finds the split groups; only when some mixed group is split
    are those groups' rows (hidden states on CPU) gathered. Returns {uid: remote rows}; empty in the normal case.
    """
    if dp_group is None or not dist.is_available() or not dist.is_initialized():
        return {}
    world = dist.get_world_size(dp_group)
    if world == 1:
        return {}
    summaries = [None] * world
    dist.all_gather_object(summaries, [(r.uid, r.positive) for r in rows], group=dp_group)
    holders: dict[str, set[int]] = {}
    signs: dict[str, set[bool]] = {}
    for rank, summary in enumerate(summaries):
        for uid, positive in summary:
            holders.setdefault(uid, set()).add(rank)
            signs.setdefault(uid, set()).add(positive)
    split = {u for u, ranks in holders.items() if len(ranks) > 1 and len(signs[u]) == 2}
    if not split:
        return {}
    me = dist.get_rank(dp_group)
    payload = [
        RowRecord(r.uid, r.key, r.positive, r.hidden.detach().cpu(), r.mask.detach().cpu(), r.owner)
        for r in rows
        if r.uid in split
    ]
    gathered = [None] * world
    dist.all_gather_object(gathered, payload, group=dp_group)
    mine = {r.uid for r in rows}
    remote: dict[str, list[RowRecord]] = {}
    for rank, records in enumerate(gathered):
        if rank == me:
            continue
        for rec in records:
            if rec.uid in mine:
                remote.setdefault(rec.uid, []).append(rec)
    return remote


def _stats_row(stats: dict | None) -> list[float]:
    """The STATS_COLUMNS of one group (NaN diagnostics, weighted=0 when the group got no residual weights)."""
    nan = float("nan")
    if not stats or not stats.get("neg_tokens_weighted", 0.0) > 0:
        return [0.0] + [nan] * (len(STATS_COLUMNS) - 1)
    return [
        1.0,
        stats["residual_q10"],
        stats["residual_q50"],
        stats["residual_q90"],
        stats["energy_share_mean"],
        stats["rank_mean"],
    ]


def shard_weight_fields(rows: list[RowRecord], config: ResRLConfig, dp_group=None) -> dict[str, torch.Tensor]:
    """The WEIGHTS/POSITIVE/STATS fields for one rank's rows (given in shard order, owner = (rank, index))."""
    remote = exchange_split_groups(rows, dp_group)
    by_group: dict[str, list[RowRecord]] = {}
    for r in rows:
        by_group.setdefault(r.uid, []).append(r)
    results: dict[tuple[int, int], tuple[torch.Tensor, dict]] = {}
    for uid, members in by_group.items():
        complete = members + remote.get(uid, [])
        if _is_mixed(complete):
            results.update(group_weights(complete, config))
    weights, stats = [], []
    for r in rows:
        w, s = results.get(r.owner, (None, None))
        weights.append(w.cpu() if w is not None else torch.ones(r.hidden.shape[0], dtype=torch.float32))
        stats.append(_stats_row(s))
    return {
        WEIGHTS_FIELD: torch.nested.as_nested_tensor(weights, layout=torch.jagged),
        POSITIVE_FIELD: torch.tensor([float(r.positive) for r in rows], dtype=torch.float32),
        STATS_FIELD: torch.tensor(stats, dtype=torch.float32).reshape(len(rows), len(STATS_COLUMNS)),
    }
