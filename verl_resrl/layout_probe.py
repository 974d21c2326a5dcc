"""ResRL layout probe: are this run's token weights the same whatever verl's batch layout? (diagnostic, opt-in)

With ``+trainer.resrl_layout_probe=/path/report.json``, :class:`verl_resrl.trainer.ResRLTrainer` runs this once, at the
first step whose batch has weighted groups, right after its normal old-log-prob pass. The same batch is sent through
``actor_rollout_wg.compute_log_prob`` again under other layouts:

* micro-batch sizes 1, 2, 4 (those dividing the per-rank shard) and dynamic batch size on (token budget of two
  longest sequences) / off: verl reads these per call from the batch (``TrainingWorker.infer_batch`` only fills them
  in when absent), so the worker-side engine config is unchanged;
* the data-parallel partition: whole groups balanced by workload, whole groups first-fit in order (what
  ``trainer.balance_batch`` true/false give), and (with >= 2 ranks) a round-robin one that SPLITS every prompt group
  across ranks, so the weights must come from the workers' exchange of split groups.

For each layout the report gives the largest absolute difference of any per-token weight and of any log-prob from
the normal pass, and that layout's coverage. The normal pass's fields are written back afterwards, so training goes
on unchanged. The log-prob difference is the forward's own numerical noise under that layout (bf16 on GPUs; on CPU
fp32, packed sequences under sdpa differ by ~1e-7, right-padded ones not at all); the weight difference is that
noise after ResRL's quantile normalisation, which amplifies it where a group's residual spread is small.
"""

from __future__ import annotations

import copy
import json
import os

import torch

from verl_resrl.workers.resrl_groups import POSITIVE_FIELD, STATS_FIELD, WEIGHTS_FIELD, dense_rows

PROBE_CONFIG_KEY = "resrl_layout_probe"
"""``trainer.resrl_layout_probe``: path of the JSON report (absent / null: no probe)."""
FIELDS = [WEIGHTS_FIELD, POSITIVE_FIELD, STATS_FIELD, "log_probs"]


def round_robin_partition(n: int, k: int) -> list[list[int]]:
    """Row i to rank i % k: consecutive rows of a group land on different ranks (every group of >= 2 rows split)."""
    return [list(range(r, n, k)) for r in range(k)]


def probe_layouts(shard_size: int, max_seq_len: int, dp_size: int) -> list[tuple[str, dict, str]]:
    """(name, worker overrides, partition kind) of every layout to compare with the normal pass."""
    layouts = [
        (f"micro_batch_{m}", {"use_dynamic_bsz": False, "micro_batch_size_per_gpu": m}, "same")
        for m in (1, 2, 4) if shard_size % m == 0
    ]
    layouts.append(("dynamic_bsz", {"use_dynamic_bsz": True, "max_token_len_per_gpu": 2 * max_seq_len}, "same"))
    layouts.append(("balanced_partition", {}, "balanced"))
    layouts.append(("first_fit_partition", {}, "first_fit"))
    if dp_size > 1:
        layouts.append(("every_group_split", {}, "round_robin"))
    return layouts


def _read(tq, keys, partition_id):
    """({key: (weights, stats row, log-probs)}, the raw TensorDict) of the fields the pass wrote to the queue."""
    data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=FIELDS)
    weights, stats, log_probs = data[WEIGHTS_FIELD].unbind(), dense_rows(data[STATS_FIELD]), data["log_probs"].unbind()
    return {k: (weights[i], stats[i], log_probs[i]) for i, k in enumerate(keys)}, data


def run_layout_probe(trainer, batch, settings: dict, reference_metrics: dict) -> dict:
    """Re-run the old-log-prob pass of ``batch`` under each layout; returns (and writes) the report."""
    import transfer_queue as tq
    from transfer_queue import KVBatchMeta

    from verl_resrl.trainer import whole_group_partition

    keys, tags = list(batch.keys), list(batch.tags)
    dp = trainer._dp_size()
    reference, reference_td = _read(tq, keys, batch.partition_id)
    seqlens = [int(t["seq_len"]) for t in tags]
    report = {"step": trainer.global_steps, "dp_size": dp, "rows": len(keys),
              "reference": {k: reference_metrics.get(k) for k in ("resrl/coverage", "resrl/groups_weighted")},
              "layouts": {}}
    uid_rows = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["uid"])
    positive = (dense_rows(reference_td[POSITIVE_FIELD]) > 0.5).tolist()
    for name, overrides, kind in probe_layouts(len(keys) // dp, max(seqlens), dp):
        order = list(range(len(keys)))
        if kind in ("balanced", "first_fit"):
            parts, _ = whole_group_partition([str(u) for u in uid_rows["uid"]], positive, seqlens, dp,
                                             balance=kind == "balanced")
            order = [i for p in parts for i in p]
        elif kind == "round_robin":
            order = [i for p in round_robin_partition(len(keys), dp) for i in p]
        extra = {"calculate_entropy": True, "compute_loss": False,
                 "temperature": trainer.config.actor_rollout_ref.rollout.temperature,
                 "resrl_settings": copy.deepcopy(settings), **overrides}
        meta = KVBatchMeta(partition_id=batch.partition_id, keys=[keys[i] for i in order],
                           tags=[tags[i] for i in order], extra_info=extra)
        trainer.actor_rollout_wg.compute_log_prob(meta)
        got, _ = _read(tq, keys, batch.partition_id)
        diff = max((float((got[k][0] - reference[k][0]).abs().max()) for k in keys if reference[k][0].numel()),
                   default=0.0)
        report["layouts"][name] = {
            "max_abs_weight_diff": diff,
            "max_abs_log_prob_diff": max(float((got[k][2] - reference[k][2]).abs().max()) for k in keys),
            "same_rows_weighted": all(torch.equal(got[k][1][:1], reference[k][1][:1]) for k in keys),
            "coverage": trainer._resrl_metrics(batch)["resrl/coverage"],
        }
    tq.kv_batch_put(keys=keys, partition_id=batch.partition_id, fields=reference_td)  # the normal pass's fields
    path = str(trainer.config.trainer.get(PROBE_CONFIG_KEY))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    return report
