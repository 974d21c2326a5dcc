"""The tiny tasks' warm starts, committed: every machine starts RL from the same bytes.

A warm start trained here depends on the CPU that trained it (float32 kernels differ between AVX2 and AVX-512, and
the differences grow over hundreds of SFT steps), so the held-out numbers of every run downstream did too, and the
build cost CI ~15 min per task on an AVX2 machine. The builders therefore install committed weights when the
settings asked for are the ones the weights were made with, and train only when asked to (``retrain``) or when the
settings differ:

    verl_resrl/tiny/warm_starts/<task>/model.safetensors   the weights (~4 MB, fp32)
    verl_resrl/tiny/warm_starts/<task>/record.json         settings hash and settings, file sha256, build facts

The record's ``facts`` are those measured when the weights were trained (CPU, seconds, warm-start accuracies); the
install checks the file's sha256 before loading and the weights' fingerprint after. To remake them:
``python -m verl_resrl.tiny.build --retrain --publish`` (``verl_resrl.tiny_tools.build`` the same), then commit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys

from verl_resrl.data.bfcl import sha256_of as file_sha256  # the one file hasher (pinned wheels, replays, weights)

WARM_STARTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "warm_starts")
WEIGHTS_FILE = "model.safetensors"
RECORD_FILE = "record.json"


class CommittedWarmStartError(RuntimeError):
    """A committed warm start does not match its record (a damaged checkout or an unfinished publish)."""


def _paths(task: str, root: str) -> tuple[str, str]:
    folder = os.path.join(root, task)
    return os.path.join(folder, WEIGHTS_FILE), os.path.join(folder, RECORD_FILE)


def find(task: str, settings_hash: str, root: str = WARM_STARTS_DIR) -> dict | None:
    """The committed record of ``task`` if it was made with ``settings_hash``, else None (the builder trains)."""
    weights, record_path = _paths(task, root)
    if not os.path.exists(record_path):
        return None
    with open(record_path, encoding="utf-8") as fh:
        record = json.load(fh)
    if record.get("settings_hash") != settings_hash:
        return None
    if not os.path.exists(weights):
        raise CommittedWarmStartError(f"{record_path} names weights that are missing: {weights}")
    return record


def load_into(model, task: str, record: dict, root: str = WARM_STARTS_DIR) -> None:
    """Load the committed weights into ``model`` (built with the record's settings), checking both fingerprints."""
    from safetensors.torch import load_model

    from .model import weights_sha256

    weights, _ = _paths(task, root)
    actual = file_sha256(weights)
    if actual != record["file_sha256"]:
        raise CommittedWarmStartError(f"{weights}: sha256 {actual} differs from its record's {record['file_sha256']}"
                                      " (a damaged checkout? `git checkout -- verl_resrl/tiny/warm_starts`)")
    load_model(model, weights, strict=True)
    if weights_sha256(model) != record["facts"]["weights_sha256"]:
        raise CommittedWarmStartError(f"{weights}: the loaded weights' fingerprint differs from its record's")


def publish(task: str, data_dir: str, marker: dict, root: str = WARM_STARTS_DIR) -> str:
    """Copy a build's weights and its marker's settings and facts into the committed folder; return the folder."""
    if marker["facts"].get("weights_source", "trained here") != "trained here":
        raise CommittedWarmStartError(f"{data_dir} holds installed weights, not a training run: build with --retrain")
    weights, record_path = _paths(task, root)
    os.makedirs(os.path.dirname(weights), exist_ok=True)
    shutil.copyfile(os.path.join(data_dir, "model", WEIGHTS_FILE), weights)
    record = {"task": task, "settings_hash": marker["settings_hash"], "settings": marker["settings"],
              "file_sha256": file_sha256(weights), "facts": marker["facts"]}
    with open(record_path, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return os.path.dirname(weights)


def install(model, task: str, record: dict, model_dir: str) -> dict:
    """Load the committed weights into ``model``, save it into ``model_dir``; return the facts the build reports:
    the training run's, and where the weights came from."""
    from .model import save_model

    load_into(model, task, record)
    save_model(model, model_dir)
    facts = dict(record["facts"])
    facts["weights_source"] = f"committed (verl_resrl/tiny/warm_starts/{task}, trained on {facts.get('cpu', '?')})"
    return facts


def build_cli(argv, *, prog: str, description: str, task: str, default_dir: str, ensure, errors: tuple,
              marker_name: str) -> None:
    """The tiny builders' command line: build (or reuse) under ``--out``; ``--retrain`` trains instead of installing
    the committed weights, ``--publish`` then copies them here (commit them); prints the assets as JSON."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--out", default=default_dir, help="data directory (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="replace an existing build of ours in --out")
    parser.add_argument("--retrain", action="store_true", help="train the warm start instead of installing the "
                        "committed one (with --rebuild to replace a build)")
    parser.add_argument("--publish", action="store_true", help="then copy the trained weights and facts into "
                        f"{WARM_STARTS_DIR}/{task} (commit them; needs --retrain)")
    args = parser.parse_args(argv)
    if args.publish and not args.retrain:  # only weights trained by this run are published
        parser.error("--publish needs --retrain: only weights trained by this run are published")
    try:
        assets = ensure(args.out, rebuild=args.rebuild, retrain=args.retrain)
        if args.publish:
            with open(os.path.join(assets.data_dir, marker_name), encoding="utf-8") as fh:
                print(f"published: {publish(task, assets.data_dir, json.load(fh))}", file=sys.stderr)
    except (*errors, CommittedWarmStartError) as err:
        parser.exit(2, f"error: {err}\n")
    print(json.dumps(dataclasses.asdict(assets), indent=2, sort_keys=True))
