"""Is a run or an eval of the study finished? Decided from its outputs, validated, never from a flag file.

A training run is finished when (1) its final checkpoint ``ckpt/global_step_{steps}/actor`` is a complete verl FSDP
checkpoint (fsdp_config.json, a model shard for every rank, huggingface/config.json), (2) verl's
``latest_checkpointed_iteration.txt`` names that step, and (3) its ``metrics.jsonl`` parses and holds a record of
the last step. An eval is finished when its ``results.json`` parses, was made from that model path, and every
benchmark in it has the study's ``n`` and number of prompts. Anything else counts as not finished and is redone.
"""

from __future__ import annotations

import json
import os

from verl_resrl.eval.checkpoint import checkpoint_world_size


def read_metrics(path: str) -> list[dict]:
    """The records of a metrics.jsonl; a last line cut short (a killed run) is ignored, others must parse."""
    records = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # no newline after it: the write was interrupted
                break
            raise ValueError(f"{path} line {i + 1} is not JSON") from None
    return records


def training_status(run) -> tuple[bool, str]:
    """(finished, reason) of a planned run's training, from its checkpoint and metrics files."""
    try:
        if checkpoint_world_size(run.actor_dir) is None:
            return False, f"no verl checkpoint at {run.actor_dir}"
    except (OSError, ValueError) as err:
        return False, f"incomplete checkpoint: {err}"
    tracker = os.path.join(run.ckpt_dir, "latest_checkpointed_iteration.txt")
    try:
        with open(tracker) as f:
            latest = int(f.read().strip())
    except (OSError, ValueError):
        return False, f"no readable {tracker}"
    if latest != run.steps:
        return False, f"{tracker} says step {latest}, the study's budget is {run.steps}"
    metrics = os.path.join(run.run_dir, "metrics.jsonl")
    try:
        steps = {int(r.get("step", -1)) for r in read_metrics(metrics)}
    except (OSError, ValueError) as err:
        return False, f"metrics unreadable: {err}"
    if run.steps not in steps:
        return False, f"{metrics} has no record of step {run.steps}"
    return True, "checkpoint and metrics complete"


def eval_status(eval_dir: str, model_path: str, n: int, num_prompts: int | dict[str, int] | None,
                fingerprints: set[str] | None = None) -> tuple[bool, str]:
    """(finished, reason) of an eval from its results.json: same model, n and prompt count for every benchmark
    (``num_prompts``: one count for all, or {benchmark name: count}, which also fixes the set of benchmarks), and, when ``fingerprints`` is given, made from exactly those benchmark files (the eval CLI's sha256 of each file's
    prompts and answers, in ``samples/*.meta.json``): a held-out set rebuilt with other rules is not "finished"."""
    path = os.path.join(eval_dir, "results.json")
    try:
        with open(path) as f:
            results = json.load(f)
        benches = results["benchmarks"]
        stored_model = results["config"]["model_path"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return False, f"no valid {path} ({type(err).__name__})"
    if os.path.abspath(stored_model) != os.path.abspath(model_path):
        return False, f"{path} was made from {stored_model}, not {model_path}"
    if not benches:
        return False, f"{path} holds no benchmark"
    if isinstance(num_prompts, dict) and set(benches) != set(num_prompts):
        return False, f"{path} holds benchmarks {sorted(benches)}, the study wants {sorted(num_prompts)}"
    for name, metrics in benches.items():
        if metrics.get("n") != n:
            return False, f"{path}: {name} has n={metrics.get('n')}, the study wants {n}"
        wanted = num_prompts.get(name) if isinstance(num_prompts, dict) else num_prompts
        if wanted is not None and metrics.get("num_prompts") != wanted:
            return False, f"{path}: {name} has {metrics.get('num_prompts')} prompts, the study wants {wanted}"
    samples = os.path.join(eval_dir, "samples")
    if not os.path.isdir(samples):
        return False, f"{eval_dir} has no samples/ (the report needs the per-prompt results)"
    if fingerprints is not None:
        found = set()
        for meta in sorted(f for f in os.listdir(samples) if f.endswith(".meta.json")):
            try:
                with open(os.path.join(samples, meta)) as f:
                    found.add(json.load(f)["benchmark_fingerprint"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                return False, f"no valid {os.path.join(samples, meta)} ({type(err).__name__})"
        if found != fingerprints:
            return False, f"{eval_dir} was made from other benchmark data than the study's (fingerprints differ)"
    return True, "results complete"
