"""The targeted exchange of split groups between data-parallel ranks (pure torch.distributed, no verl).

When the trainer's partition could not keep a mixed prompt group whole on one rank, its rows must meet on ONE rank for
the PCA. :class:`SplitExchange` does that with exactly the traffic it needs:

1. one ``all_gather_object`` of a few numbers per row (uid, sign, length, content key; plus each rank's state width
   and element size) gives every rank the same picture, hence the same plan: each split group is computed by the rank
   holding most of its tokens (ties: the lowest rank), so the fewest state bytes move;
2. point-to-point (``batch_isend_irecv``): every other holder sends THAT rank its rows' states and masks, nothing else,
   nobody else (no everything-to-everyone gather);
3. after the PCA the computing rank sends each holder the weights (float32) and group statistics of that holder's
   rows only.

``payload_bytes`` is the step's total of (2) + (3) over all ranks, computed from the plan (the same number on every
rank; the states in the model dtype, masks and weights in float32). Received states land on ``device`` (the computing
rank's compute device), so a group's PCA runs on one device with one set of numerics.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

FLOAT32_BYTES = 4


def _comm_device(dp_group, device: torch.device) -> torch.device:
    """NCCL moves device tensors only; gloo (the CPU path) moves CPU tensors only."""
    return device if dist.get_backend(dp_group) == "nccl" else torch.device("cpu")


def plan_owners(summaries: list[dict]) -> dict[str, int]:
    """{uid: computing rank} of the mixed groups held by more than one rank (most tokens wins, then lowest rank)."""
    tokens: dict[str, dict[int, int]] = {}
    signs: dict[str, set[bool]] = {}
    for rank, summary in enumerate(summaries):
        for uid, positive, length, _key in summary["rows"]:
            tokens.setdefault(uid, {}).setdefault(rank, 0)
            tokens[uid][rank] += length
            signs.setdefault(uid, set()).add(positive)
    return {uid: min(held, key=lambda p: (-held[p], p)) for uid, held in tokens.items()
            if len(held) > 1 and len(signs[uid]) == 2}


def payload_bytes(summaries: list[dict], owners: dict[str, int], stats_width: int) -> int:
    """Bytes the plan moves: states + masks to the computing rank, weights + group statistics back."""
    total = 0
    for rank, summary in enumerate(summaries):
        for uid, _positive, length, _key in summary["rows"]:
            if owners.get(uid, rank) != rank:
                total += length * (summary["width"] * summary["elem"] + FLOAT32_BYTES)  # states, mask
                total += (length + stats_width) * FLOAT32_BYTES  # weights, stats row
    return total


class SplitExchange:
    """One step's exchange over ``dp_group`` for the rows of this rank (RowRecord-like: uid, key, positive, hidden,
    mask, owner)."""

    def __init__(self, rows: list, dp_group, device: torch.device, stats_width: int):
        self.rows, self.group, self.device, self.stats_width = rows, dp_group, torch.device(device), stats_width
        self.world, self.me = dist.get_world_size(dp_group), dist.get_rank(dp_group)
        width = int(rows[0].hidden.shape[-1]) if rows else 0
        elem = rows[0].hidden.element_size() if rows else 0
        mine = {"rows": [(r.uid, bool(r.positive), int(r.hidden.shape[0]), int(r.key)) for r in rows],
                "width": width, "elem": elem, "dtype": str(rows[0].hidden.dtype) if rows else ""}
        self.summaries: list = [None] * self.world
        dist.all_gather_object(self.summaries, mine, group=dp_group)
        self.owners = plan_owners(self.summaries)
        self.payload_bytes = payload_bytes(self.summaries, self.owners, stats_width)
        self.comm = _comm_device(dp_group, self.device)

    def _peer(self, rank: int) -> int:
        """Global rank of a dp-group rank (P2POp takes global ranks)."""
        return dist.get_global_rank(self.group, rank)

    def _incoming_rows(self, rank: int) -> list[tuple[int, tuple]]:
        """(row index on ``rank``, summary row) of that rank's rows in groups this rank computes, in its order."""
        return [(i, row) for i, row in enumerate(self.summaries[rank]["rows"])
                if rank != self.me and self.owners.get(row[0]) == self.me]

    def _run(self, ops: list) -> None:
        for work in dist.batch_isend_irecv(ops) if ops else []:
            work.wait()

    def gather_rows(self) -> dict[str, list[tuple]]:
        """States of the groups this rank computes, from their other holders: {uid: [(uid, key, positive, hidden,
        mask, owner)]} on ``device``. This rank's rows of groups computed elsewhere are sent there."""
        ops, received = [], []
        for rank in range(self.world):
            out = [r for r in self.rows if self.owners.get(r.uid, self.me) == rank and rank != self.me]
            if out:
                states = torch.cat([r.hidden.to(self.comm) for r in out]).contiguous()
                masks = torch.cat([r.mask.to(self.comm, torch.float32) for r in out])
                ops += [dist.P2POp(dist.isend, states, self._peer(rank), self.group, tag=0),
                        dist.P2POp(dist.isend, masks, self._peer(rank), self.group, tag=1)]
            incoming = self._incoming_rows(rank)
            if incoming:
                n = sum(row[2] for _, row in incoming)
                info = self.summaries[rank]
                dtype = getattr(torch, info["dtype"].removeprefix("torch."))
                states = torch.empty(n, info["width"], dtype=dtype, device=self.comm)
                masks = torch.empty(n, dtype=torch.float32, device=self.comm)
                ops += [dist.P2POp(dist.irecv, states, self._peer(rank), self.group, tag=0),
                        dist.P2POp(dist.irecv, masks, self._peer(rank), self.group, tag=1)]
                received.append((rank, incoming, states, masks))
        self._run(ops)
        remote: dict[str, list[tuple]] = {}
        for rank, incoming, states, masks in received:
            lengths = [row[2] for _, row in incoming]
            for (i, (uid, positive, _length, key)), h, m in zip(incoming, states.split(lengths), masks.split(lengths),
                                                                 strict=True):
                remote.setdefault(uid, []).append((uid, key, positive, h.to(self.device), m.to(self.device), (rank, i)))
        return remote

    def return_weights(self, results: dict) -> dict:
        """Send each holder its rows' (weights, stats row) from ``results`` {(rank, index): (weights (r,), stats
        list)}; returns those of this rank's rows that other ranks computed, keyed like ``results``."""
        ops, expected = [], []
        for rank in range(self.world):
            incoming = self._incoming_rows(rank)
            if incoming:
                parts = [results[(rank, i)] for i, _ in incoming]
                flat = torch.cat([w.float().reshape(-1).to(self.comm) for w, _ in parts]
                                 + [torch.tensor([s for _, s in parts], dtype=torch.float32, device=self.comm)
                                    .reshape(-1)])
                ops.append(dist.P2POp(dist.isend, flat, self._peer(rank), self.group, tag=2))
            back = [r for r in self.rows if self.owners.get(r.uid, self.me) == rank and rank != self.me]
            if back:
                lengths = [int(r.hidden.shape[0]) for r in back]
                flat = torch.empty(sum(lengths) + len(back) * self.stats_width, device=self.comm)
                ops.append(dist.P2POp(dist.irecv, flat, self._peer(rank), self.group, tag=2))
                expected.append((back, lengths, flat))
        self._run(ops)
        out = {}
        for back, lengths, flat in expected:
            weights, stats = flat[: sum(lengths)], flat[sum(lengths):].reshape(len(back), self.stats_width)
            for r, w, s in zip(back, weights.split(lengths), stats, strict=True):
                out[r.owner] = (w.cpu(), s.cpu().tolist())
        return out
