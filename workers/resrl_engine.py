"""verl seam: ``EngineRegistry`` (``verl/workers/engine/base.py``). ResRL's hidden-state capture in the FSDP engine.

``ResRLFSDPEngine`` extends verl's ``FSDPEngineWithLMHead`` (``verl/workers/engine/fsdp/transformer_impl.py``) and
is registered for the (device, vendor) keys, which verl's ``EngineRegistry.get_engine_cls`` tries before the plain
device keys that the stock engine holds. It changes nothing unless the batch carries ``SETTINGS_KEY`` (put there by
``verl_resrl.trainer.ResRLTrainer`` for the forward-only old-log-prob pass only). Then:

* ``forward_step``: a forward hook on ONE module of the model (no ``output_hidden_states``, no extra forward) grabs
  the chosen layer's states of the packed micro-batch; they are gathered back over the Ulysses group exactly like
  verl gathers the log-probs, unpacked per sequence, and cut to the response with the log-prob shift (the state at
  position t-1 produced token t). The log-probs are untouched: the hook only reads an activation.
* ``forward_backward_batch``: after the whole local shard ran (any micro-batch split, dynamic-batch reordering undone
  through a row-index field), ``workers/resrl_groups.shard_weight_fields`` turns the states into per-token weights
  over whole groups. Only those weights (and per-row flags) join the model output, i.e. verl's TransferQueue fields.

The hook (``workers/resrl_capture.LayerTap``: decoder layer i's input, or the final norm's output for i = L) fires
identically on the eager path, under verl's fused-kernel forward (``models/transformers/dense_common.py`` calls the
same decoder) and under Ulysses (each rank sees its sequence slice).
"""

from __future__ import annotations

import time

import torch

from verl.utils import tensordict_utils as tu
from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

from verl_resrl.algos.resrl import ResRLConfig

from .resrl_capture import LayerTap, flatten_padded, response_slices
from .resrl_groups import SETTINGS_KEY, RowRecord, content_key, sequence_is_positive, shard_weight_fields

SECONDS_METRIC = "resrl/worker_seconds"
"""Metric (per data-parallel rank) of the old-log-prob pass: seconds of ResRL's own work on that rank."""
ROW_INDEX_FIELD = "resrl_row_index"
"""Temporary tensor field: each row's index in the shard, carried through verl's micro-batching and its reordering."""

ENGINE_KEYS = (("cuda", "nvidia"), ("cuda", "amd"), ("npu", "huawei"))
"""(device, vendor) keys we register: the stock FSDP engine holds the plain "cuda"/"npu" keys, which verl's lookup
tries AFTER the (device, vendor) key, so ours wins without clashing."""

class _ShardStore:
    """Per-row captured response states of one rank's shard, filled micro-batch by micro-batch."""

    def __init__(self, size: int):
        self.rows: list[torch.Tensor | None] = [None] * size
        self.seconds = 0.0  # time spent on ResRL's own work (cutting/storing states, weights): the overhead metric

    def put(self, row_index: torch.Tensor, hidden: list[torch.Tensor]) -> None:
        for i, h in zip(row_index.tolist(), hidden, strict=True):
            self.rows[i] = h

    def complete(self) -> list[torch.Tensor]:
        missing = [i for i, h in enumerate(self.rows) if h is None]
        if missing:
            raise RuntimeError(f"ResRL capture: no hidden states for shard rows {missing[:8]} (of {len(self.rows)})")
        return self.rows


class ResRLFSDPEngine(FSDPEngineWithLMHead):
    """verl's FSDP LM-head engine plus ResRL's capture in the forward-only pass (a no-op without SETTINGS_KEY)."""

    _resrl_capture: tuple[LayerTap, _ShardStore] | None = None
    _resrl_taps: dict | None = None

    def _layer_tap(self, hidden_layer: int) -> LayerTap:
        """One LayerTap per requested layer, built on first use (the module tree is fixed after initialize)."""
        if self._resrl_taps is None:
            self._resrl_taps = {}
        if hidden_layer not in self._resrl_taps:
            self._resrl_taps[hidden_layer] = LayerTap(self.module, hidden_layer)
        return self._resrl_taps[hidden_layer]

    def forward_backward_batch(self, data, loss_function, forward_only=False):
        """Extends verl's: with SETTINGS_KEY in a forward-only batch, also returns the ResRL fields of the shard."""
        settings = tu.get_non_tensor_data(data=data, key=SETTINGS_KEY, default=None)
        if settings is None or not forward_only:
            return super().forward_backward_batch(data, loss_function, forward_only)
        config = ResRLConfig(**settings["config"])
        store = _ShardStore(len(data))
        data[ROW_INDEX_FIELD] = torch.arange(len(data))
        self._resrl_capture = (self._layer_tap(int(settings["hidden_layer"])), store)
        try:
            output = super().forward_backward_batch(data, loss_function, forward_only)
        finally:
            self._resrl_capture = None
            del data[ROW_INDEX_FIELD]
        start = time.perf_counter()
        rows = self._shard_rows(data, store.complete())
        output["model_output"].update(shard_weight_fields(rows, config, self.get_data_parallel_group()))
        output["metrics"][SECONDS_METRIC] = store.seconds + time.perf_counter() - start
        return output

    def _shard_rows(self, data, hidden: list[torch.Tensor]) -> list[RowRecord]:
        """RowRecords of the local shard: group id, content key, positive flag, response states and mask."""
        uids = [str(u) for u in data["uid"]]
        positive = sequence_is_positive(data["rm_scores"]).tolist()
        responses, masks = data["responses"].unbind(), data["response_mask"].unbind()
        dp_rank = self.get_data_parallel_rank()
        return [
            RowRecord(uids[i], content_key(responses[i]), positive[i], hidden[i], masks[i], (dp_rank, i))
            for i in range(len(hidden))
        ]

    def forward_step(self, micro_batch, loss_function, forward_only):
        """Extends verl's: while capturing, also keeps the micro-batch's response hidden states."""
        if self._resrl_capture is None:
            return super().forward_step(micro_batch, loss_function, forward_only)
        tap, store = self._resrl_capture
        with tap.capture() as grabbed:
            loss, output = super().forward_step(micro_batch, loss_function, forward_only)
        if len(grabbed) != 1:
            raise RuntimeError(f"ResRL capture: the hooked module ran {len(grabbed)} times in one forward (expected 1)")
        start = time.perf_counter()
        store.put(micro_batch[ROW_INDEX_FIELD], self._response_hidden(grabbed[0], micro_batch))
        store.seconds += time.perf_counter() - start
        return loss, output

    def _response_hidden(self, captured: torch.Tensor, micro_batch) -> list[torch.Tensor]:
        """Per-row (response_len, d) states from the captured activation of the model input verl built."""
        seq_lens = micro_batch["input_ids"].offsets().diff().cpu()
        resp_lens = micro_batch["response_mask"].offsets().diff().cpu()
        if tu.get_non_tensor_data(data=micro_batch, key="use_remove_padding", default=True):
            # packed (1, nnz/sp + pad, d): undo the Ulysses split the way verl undoes it for the log-probs, then drop
            # the (static + SP) padding, which is always a suffix of the global packed sequence
            flat = self._gather_and_unpad_packed(captured.squeeze(0), 0)[: int(seq_lens.sum())]
        else:
            # right-padded (B, max_len, d) (verl's build_attention_mask_from_nested): keep each sequence's prefix
            flat = flatten_padded(captured, seq_lens)
        return response_slices(flat, seq_lens, resp_lens)


def register() -> None:
    """Register ResRLFSDPEngine for ENGINE_KEYS (idempotent: a second import does not re-register)."""
    registry = EngineRegistry._engines.get("language_model", {})
    for backend in ("fsdp", "fsdp2"):
        for device, vendor in ENGINE_KEYS:
            if registry.get(backend, {}).get((device, vendor)) is ResRLFSDPEngine:
                continue
            EngineRegistry.register("language_model", backend, device=device, vendor=vendor)(ResRLFSDPEngine)


register()
