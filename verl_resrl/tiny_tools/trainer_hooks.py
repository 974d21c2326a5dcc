"""verl seam: ``PPOTrainer._compute_metrics`` (v1 trainer, ``trainer/ppo/v1/trainer_base.py``), extended for
multi-turn tool rollouts. The launcher wraps the trainer class with :func:`with_tool_metrics` when
``actor_rollout_ref.rollout.multi_turn.enable`` is true; otherwise nothing here runs.

What verl 0.9.1 logs for multi-turn: ``training/num_turns/{mean,max,min}`` and ``num_turns/*`` (turns per rollout:
user + assistant turns + 1) every step, ``val-aux/num_turns/*`` at validation; nothing about tool calls (its
``agent_loop/tool_calls/*`` timings exist only on the non-TransferQueue path). So this adds, per step, over the
batch's real (non-padding) rows, read from TransferQueue while verl's metrics are computed:

- ``tools/rounds/mean`` and ``tools/used_frac``: tool rounds per rollout (runs of response-mask-0 tokens inside the
  response: each is one merge of tool output by verl's continuous-token builder) and the share of rollouts with one;
- ``tools/output_tokens/mean``: response tokens with mask 0 (tool output and the builder's boundary tokens);
- ``tools/calls/mean`` and ``tools/errors/mean``: calls executed and calls answered with an error, as counted by
  ``CalcTool`` in the trajectory's ``extra_fields`` (absent for tools that do not count).

``resrl_tiny_tools.rollout_dump`` (a file path, default off) writes the first step's rows as JSON lines: response
token ids, ``response_mask``, ``resrl_weights`` when ResRL ran, and the sequence score. The e2e test reads it to check
that tool-output tokens have mask 0 and ResRL weight 1 in a real training step.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from verl_resrl.tiny_tools.tools import CALLS_FIELD, ERRORS_FIELD

PREFIX = "tools/"
DUMP_KEY = "resrl_tiny_tools.rollout_dump"


def mask_runs(mask: torch.Tensor) -> int:
    """Runs of zeros strictly inside a response mask (between model tokens): the tool rounds of one rollout."""
    ones = torch.nonzero(mask.flatten() > 0).flatten()
    if len(ones) < 2:
        return 0
    return int(((ones[1:] - ones[:-1]) > 1).sum())


def tool_metrics(masks: list[torch.Tensor], extra_fields: list) -> dict[str, float]:
    """The ``tools/*`` metrics of one batch (see the module docstring)."""
    rounds = np.array([mask_runs(m) for m in masks], dtype=float)
    tool_tokens = np.array([int((m.flatten() == 0).sum()) for m in masks], dtype=float)
    out = {PREFIX + "rounds/mean": rounds.mean(), PREFIX + "used_frac": (rounds > 0).mean(),
           PREFIX + "output_tokens/mean": tool_tokens.mean()}
    fields = [f if isinstance(f, dict) else {} for f in extra_fields]
    if any(CALLS_FIELD in f for f in fields):
        out[PREFIX + "calls/mean"] = float(np.mean([f.get(CALLS_FIELD, 0) for f in fields]))
        out[PREFIX + "errors/mean"] = float(np.mean([f.get(ERRORS_FIELD, 0) for f in fields]))
    return {k: float(v) for k, v in out.items()}


def _dump_rows(path: str, data, step: int) -> None:
    """Write the batch's rows (token ids, masks, weights, score) as JSON lines to ``path``."""
    from verl_resrl.workers.resrl_groups import WEIGHTS_FIELD

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    responses, masks = list(data["responses"].unbind()), list(data["response_mask"].unbind())
    weights = list(data[WEIGHTS_FIELD].unbind()) if WEIGHTS_FIELD in data.keys() else [None] * len(masks)
    scores = [float(s.sum()) for s in data["rm_scores"].unbind()]
    uids = [str(u) for u in data["uid"]]
    with open(path, "w", encoding="utf-8") as fh:
        for uid, ids, mask, w, score in zip(uids, responses, masks, weights, scores):
            row = {"step": step, "uid": uid, "responses": ids.tolist(), "response_mask": mask.tolist(),
                   "score": score, WEIGHTS_FIELD: None if w is None else w.float().tolist()}
            fh.write(json.dumps(row) + "\n")


def with_tool_metrics(trainer_cls):
    """``trainer_cls`` whose ``_compute_metrics`` also logs ``tools/*`` (and dumps the first step if asked)."""

    class ToolMetricsTrainer(trainer_cls):
        def _compute_metrics(self, batch, metrics, timing_raw, global_steps, epoch):
            super()._compute_metrics(batch, metrics, timing_raw, global_steps, epoch)
            import transfer_queue as tq

            from verl_resrl.workers.resrl_groups import WEIGHTS_FIELD

            keys = [k for k, tag in zip(batch.keys, batch.tags) if not tag.get("is_padding", False)]
            dump = _dump_path(self.config)
            fields = ["response_mask", "extra_fields"]
            if dump and not getattr(self, "_tool_dump_done", False):
                fields += ["uid", "responses", "rm_scores"] + ([WEIGHTS_FIELD] if _has_resrl(self.config) else [])
            data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=fields)
            extra = data["extra_fields"]  # a NonTensorStack: tolist() gives the dicts (as verl reads it)
            extra = extra.tolist() if hasattr(extra, "tolist") else list(extra)
            metrics.update(tool_metrics(list(data["response_mask"].unbind()), extra))
            if len(fields) > 2:
                _dump_rows(dump, data, global_steps)
                self._tool_dump_done = True

    ToolMetricsTrainer.__name__ = ToolMetricsTrainer.__qualname__ = trainer_cls.__name__
    return ToolMetricsTrainer


def _dump_path(config):
    """``resrl_tiny_tools.rollout_dump`` or None."""
    from omegaconf import OmegaConf

    return OmegaConf.select(config, DUMP_KEY, default=None)


def _has_resrl(config) -> bool:
    """Whether the ResRL fields exist in the batch (estimator ``resrl``)."""
    return config.algorithm.adv_estimator == "resrl"
