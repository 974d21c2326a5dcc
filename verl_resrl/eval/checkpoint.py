"""A verl FSDP checkpoint (``.../global_step_N/actor``) as eval input: merged to HF format with verl's model merger.

``python -m verl_resrl.eval model_path=CKPT/global_step_40/actor ...`` works without a manual merge: the folder is
recognised by the files verl's FSDP checkpoint manager writes (``fsdp_config.json``,
``model_world_size_{W}_rank_{r}.pt`` for every rank, ``huggingface/config.json``) and merged once, in-process, by
``verl.model_merger``'s own ``FSDPModelMerger`` (the code behind ``python -m verl.model_merger merge --backend fsdp``)
into ``{output_dir}/merged_model``. The merge is written to a temporary folder and renamed when verl's output check
passes, so an interrupted merge is redone, not reused; a later run with the same output_dir reuses a merge of the
same checkpoint (the checkpoint's file sizes and times are recorded next to it).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil

MERGED_DIRNAME = "merged_model"
SOURCE_FILE = "verl_checkpoint.json"  # inside the merged folder: which checkpoint files it was merged from
_SHARD = re.compile(r"model_world_size_(\d+)_rank_(\d+)\.pt$")


def checkpoint_world_size(path: str) -> int | None:
    """The world size of a verl FSDP checkpoint folder, or None when ``path`` is not one (e.g. an HF model folder)."""
    if not os.path.isfile(os.path.join(path, "fsdp_config.json")):
        return None
    with open(os.path.join(path, "fsdp_config.json")) as f:
        world_size = json.load(f).get("world_size")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"{path}/fsdp_config.json: world_size must be a positive integer, got {world_size!r}")
    ranks = {int(m.group(2)) for f in os.listdir(path) if (m := _SHARD.match(f)) and int(m.group(1)) == world_size}
    missing = sorted(set(range(world_size)) - ranks)
    if missing:
        raise FileNotFoundError(f"{path}: verl checkpoint of world size {world_size} lacks model shards of ranks "
                                f"{missing} (model_world_size_{world_size}_rank_R.pt)")
    if not os.path.isfile(os.path.join(path, "huggingface", "config.json")):
        raise FileNotFoundError(f"{path}: verl checkpoint without huggingface/config.json (the model config)")
    return world_size


def _source_stamp(path: str) -> dict:
    """What identifies the checkpoint's content cheaply: absolute path, sizes and mtimes of its model shards."""
    shards = sorted(glob.glob(os.path.join(path, "model_world_size_*_rank_*.pt")))
    return {
        "checkpoint": os.path.abspath(path),
        "shards": {os.path.basename(s): [os.path.getsize(s), os.path.getmtime(s)] for s in shards},
    }


def _is_complete(target: str, stamp: dict) -> bool:
    """A merged folder that verl's output check accepts and that was merged from exactly this checkpoint."""
    from verl.model_merger.output_validation import validate_hf_model_output

    try:
        validate_hf_model_output(target)
        with open(os.path.join(target, SOURCE_FILE)) as f:
            return json.load(f) == stamp
    except (OSError, ValueError, RuntimeError):  # RuntimeError: verl's check found it incomplete
        return False


def merge_fsdp_checkpoint(path: str, target: str) -> str:
    """Merge the verl FSDP checkpoint ``path`` into the HF folder ``target`` (reused when already merged)."""
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    stamp = _source_stamp(path)
    if _is_complete(target, stamp):
        return target
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    # the same config `python -m verl.model_merger merge --backend fsdp --local_dir P --target_dir T` builds
    config = ModelMergerConfig(operation="merge", backend="fsdp", local_dir=path, target_dir=partial,
                               hf_model_config_path=os.path.join(path, "huggingface"))
    merger = FSDPModelMerger(config)
    merger.merge_and_save()  # ends with verl's validate_hf_model_output(partial)
    merger.cleanup()
    with open(os.path.join(partial, SOURCE_FILE), "w") as f:
        json.dump(stamp, f, indent=2)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def resolve_model_path(model_path: str, output_dir: str) -> str:
    """The HF folder to load: ``model_path`` itself, or its merge when it is a verl FSDP checkpoint."""
    if not os.path.isdir(model_path):
        raise FileNotFoundError(f"model_path is not a folder: {model_path}")
    if checkpoint_world_size(model_path) is None:
        return model_path
    return merge_fsdp_checkpoint(model_path, os.path.join(output_dir, MERGED_DIRNAME))
