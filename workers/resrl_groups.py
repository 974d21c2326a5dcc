"""ResRL token weights over WHOLE prompt groups, from one data-parallel rank's captured response hidden states.

The engine (``workers/resrl_engine.py``) captures, in the forward-only old-log-prob pass, the hidden state that
produced every response token of the rank's whole shard, then calls :func:`shard_weight_fields`. That function

1. finds the prompt groups (``uid``) of the shard and asks the other data-parallel ranks, with one small
   ``all_gather_object``, which groups are split across ranks (the trainer keeps mixed groups whole, so normally
   none are). A split group is computed by ONE rank: its other holders send that rank their rows' states, and get
   their rows' weights back (``workers/resrl_exchange.py``: point to point, only those rows, only those ranks);
2. runs ``verl_resrl.algos.resrl.resrl_token_weights`` ONCE PER GROUP over the group's complete rows, in a canonical
   row order (sorted by a hash of the response tokens). One group per call makes every group's arithmetic depend on
   nothing but its own rows, so the weights are bitwise the same for any micro-batch size, dynamic batching, balancing
   or data-parallel size (given the same hidden states);
3. returns the batch fields that travel on through verl's TransferQueue: per-token weights, the positive flag and a
   few per-row group diagnostics. The hidden states leave the worker only to the one rank computing a split group.

Pure torch (plus torch.distributed): no verl import, so the trainer, the loss and the tests can use the field names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.distributed as dist

from verl_resrl.algos.resrl import ResRLConfig, resrl_token_weights

from .resrl_exchange import SplitExchange

SETTINGS_KEY = "resrl_settings"
"""Key of the non-tensor entry (trainer -> worker, via ``KVBatchMeta.extra_info``) that switches capture on:
``{"hidden_layer": int, "config": dict of ResRLConfig fields}``."""
WEIGHTS_FIELD = "resrl_weights"
"""Per response token, float32, jagged like ``response_mask``: w on negative tokens of weighted groups, else 1."""
POSITIVE_FIELD = "resrl_positive"
"""Per row, float32 0/1: sequence score (sum of ``rm_scores``) > 0 (spec: Notation)."""
STATS_FIELD = "resrl_group_stats"
"""Per row, float32 (B, len(STATS_COLUMNS)): diagnostics of the row's group (NaN where the group was not weighted)."""
PROBE_STATES_FIELD = "resrl_probe_states"
"""Per row, float32, jagged (r * d,): the captured response states, flattened. Written only in the layout probe's
passes (``settings["probe_states"]``), never in training: the probe measures the states' own float noise with it."""
EXCHANGE_BYTES_METRIC = "resrl/exchange_bytes"
"""Metric: bytes of states, masks and weights the step's split-group exchange moved, over all ranks (0: none)."""
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


TIE_BITS = 23
"""Low bits of content_key that only break ties between rows with the same model tokens (see content_key)."""


def _hash63(token_ids: torch.Tensor) -> int:
    """A 63-bit blake2b hash of int64 token ids."""
    data = token_ids.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def content_key(token_ids: torch.Tensor, mask: torch.Tensor | None = None) -> int:
    """A 63-bit key of a response's token ids: orders a group's rows the same way whatever the batch layout.

    ``mask`` (verl's response_mask): the order follows the MODEL's tokens (mask 1) only. A multi-turn rollout's
    tool output (mask 0, verl's ``ContinuousTokenBuilder.align_response_metadata``) must not reach the weights, but
    the canonical order picks the positive subsample above ``max_pos_tokens`` (and the summation order below it):
    hashing every token let tool-output ids move weights by up to 0.9 (tests/test_resrl_multiturn_mask.py). So the
    high 40 bits hash the model tokens and the low TIE_BITS the whole response, which only breaks ties between rows
    with the same model tokens (layout-independently). With an all-ones mask (or none) the key is the plain hash
    of every id, as before; a right-padded row (mask 0 on its padding) gets the two-part key too.
    """
    full = _hash63(token_ids)
    if mask is None or bool(mask.bool().all()):
        return full
    model = _hash63(token_ids[mask.bool().to(token_ids.device)])
    return (model >> TIE_BITS << TIE_BITS) | (full & ((1 << TIE_BITS) - 1))


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


def group_weights(members: list[RowRecord], config: ResRLConfig, device: torch.device | None = None
                  ) -> dict[tuple[int, int], tuple[torch.Tensor, dict]]:
    """resrl_token_weights over one complete group, on ONE device; returns {owner: (weights (r,), group stats)}.

    ``device``: the computing rank's compute device (default: the first member's). Every member, local or received
    from another rank, is moved there, so a group's PCA never mixes devices or numerics.
    """
    members = sorted(members, key=lambda m: m.key)
    n, width = len(members), max(int(m.hidden.shape[0]) for m in members)
    device = torch.device(device) if device is not None else members[0].hidden.device
    ref = members[0].hidden
    hidden = torch.zeros(n, max(width, 1), ref.shape[-1], dtype=ref.dtype, device=device)
    mask = torch.zeros(n, max(width, 1), device=device)
    for i, m in enumerate(members):
        r = m.hidden.shape[0]
        hidden[i, :r] = m.hidden.to(device)
        mask[i, :r] = m.mask.to(device, torch.float32)
    positive = torch.tensor([m.positive for m in members], device=device)
    # row_keys: ranks in the canonical order (small ints: a raw 63-bit hash times (T+1) would overflow int64)
    weights, stats = resrl_token_weights(hidden, mask, [members[0].uid] * n, positive, config, torch.arange(n))
    return {m.owner: (weights[i, : m.hidden.shape[0]].float(), stats) for i, m in enumerate(members)}


def _is_mixed(members: list[RowRecord]) -> bool:
    """A group has both positive and negative rollouts (only such groups get residual weights)."""
    return any(m.positive for m in members) and not all(m.positive for m in members)


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


def placeholder_fields(response_mask: torch.Tensor, rm_scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """The fields' shapes for a rank whose outputs verl discards (a Ulysses SP rank other than the source): weights 1,
    no group weighted."""
    lengths = response_mask.offsets().diff().tolist()
    return {
        WEIGHTS_FIELD: torch.nested.as_nested_tensor([torch.ones(n) for n in lengths], layout=torch.jagged),
        POSITIVE_FIELD: sequence_is_positive(rm_scores).float().cpu(),
        STATS_FIELD: torch.tensor([_stats_row(None) for _ in lengths], dtype=torch.float32),
    }


def _distributed(dp_group) -> bool:
    """More than one data-parallel rank to talk to."""
    return (dp_group is not None and dist.is_available() and dist.is_initialized()
            and dist.get_world_size(dp_group) > 1)


def shard_weight_fields(rows: list[RowRecord], config: ResRLConfig, dp_group=None, device=None,
                        metrics: dict | None = None) -> dict[str, torch.Tensor]:
    """The WEIGHTS/POSITIVE/STATS fields for one rank's rows (given in shard order, owner = (rank, index)).

    ``device``: where this rank computes its groups (the engine's compute device; default: the first row's).
    Groups split across ranks are computed by one rank (``workers/resrl_exchange.py``); ``metrics`` (if given)
    receives ``EXCHANGE_BYTES_METRIC``, the step's exchanged bytes over all ranks.
    """
    device = torch.device(device) if device is not None else (rows[0].hidden.device if rows else torch.device("cpu"))
    exchange = SplitExchange(rows, dp_group, device, len(STATS_COLUMNS)) if _distributed(dp_group) else None
    owners = exchange.owners if exchange else {}
    remote = exchange.gather_rows() if exchange else {}
    me = exchange.me if exchange else None
    by_group: dict[str, list[RowRecord]] = {}
    for r in rows:
        if owners.get(r.uid, me) == me:  # a split group computed by another rank: its weights come back from there
            by_group.setdefault(r.uid, []).append(r)
    results: dict[tuple[int, int], tuple[torch.Tensor, list[float]]] = {}
    for uid, members in by_group.items():
        complete = members + [RowRecord(*t) for t in remote.get(uid, [])]
        if _is_mixed(complete):
            results.update({o: (w, _stats_row(s)) for o, (w, s) in group_weights(complete, config, device).items()})
    if exchange:
        results.update(exchange.return_weights(results))
        if metrics is not None:
            metrics[EXCHANGE_BYTES_METRIC] = float(exchange.payload_bytes)
    elif metrics is not None:
        metrics[EXCHANGE_BYTES_METRIC] = 0.0
    weights, stats = [], []
    for r in rows:
        w, s = results.get(r.owner, (None, None))
        weights.append(w.cpu() if w is not None else torch.ones(r.hidden.shape[0], dtype=torch.float32))
        stats.append(s if s is not None else _stats_row(None))
    return {
        WEIGHTS_FIELD: torch.nested.as_nested_tensor(weights, layout=torch.jagged),
        POSITIVE_FIELD: torch.tensor([float(r.positive) for r in rows], dtype=torch.float32),
        STATS_FIELD: torch.tensor(stats, dtype=torch.float32).reshape(len(rows), len(STATS_COLUMNS)),
    }
