"""Build (once) and cache the tiny tool task: model dir with the tools tokenizer, train/val parquet, build facts.

    from verl_resrl.tiny_tools.build import ensure_tiny_tools_assets
    assets = ensure_tiny_tools_assets("~/.cache/verl_resrl/resrl_tiny_tools")

    python -m verl_resrl.tiny_tools.build --out DIR [--rebuild] [--retrain [--publish]]

The default settings install the committed warm start (``verl_resrl/tiny/committed.py``); other settings, or
``--retrain``, train it here (~10-15 min on 2 cores).

The same rules as ``verl_resrl.tiny.build`` (docs/tiny_task.md, "Caching and safety"), with its own marker
``resrl_tiny_tools_build.json``: a build runs in a staging folder under a file lock and the marker is written last; a
directory with files but no marker of ours, or a marker of other settings, is an error naming it (``rebuild``
replaces only a build of ours).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

from verl_resrl.tiny import committed
from verl_resrl.tiny.build import _cpu_summary
from verl_resrl.tiny.cached_build import BuildDir, ensure_built
from verl_resrl.tiny.model import TinyModelConfig
from verl_resrl.tiny.task import ArithTaskConfig
from verl_resrl.tiny_tools.task import DATA_SOURCE
from verl_resrl.tiny_tools.warmstart import ToolEvalConfig, WarmStartConfig

BUILDER = "verl_resrl.tiny_tools.build"
MARKER = "resrl_tiny_tools_build.json"
LOCK = ".resrl_tiny_tools_build.lock"
TMP_PREFIX = ".resrl_tiny_tools_tmp-"
BUILT_ENTRIES = ("model", "train.parquet", "val.parquet")
TASK = "resrl_tiny_tools"  # its folder under verl_resrl/tiny/warm_starts/
BUILD_FORMAT = 2  # bump when the build code changes what a given set of settings produces (2: one call per chain)
TOOL_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools.yaml")  # multi_turn.tool_config_path


class TinyToolsAssetsError(RuntimeError):
    """The data directory holds something this builder will not overwrite or cannot use."""


BUILD_DIR = BuildDir(builder=BUILDER, marker=MARKER, lock=LOCK, tmp_prefix=TMP_PREFIX, entries=BUILT_ENTRIES,
                     label="tiny-tools", error=TinyToolsAssetsError)


@dataclass(frozen=True)
class TinyToolsBuildSettings:
    """Everything that determines the built assets (their hash is stored in the marker)."""

    task: ArithTaskConfig = field(default_factory=ArithTaskConfig)
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    # 1500 steps of 32: copying the chain into the call is learnt late (the loss falls from ~0.13 to ~0.05 between
    # steps ~850 and ~950); 500 steps left the tool style right 9.7% of the time, 1500 97.6% (docs/tiny_tools.md)
    warmstart: WarmStartConfig = field(default_factory=lambda: WarmStartConfig(steps=1500))
    eval: ToolEvalConfig = field(default_factory=ToolEvalConfig)

    def as_dict(self) -> dict:
        return {"format": BUILD_FORMAT, **asdict(self)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TinyToolsAssets:
    """Paths of a complete build and what was measured while building it."""

    data_dir: str
    model_dir: str
    train_parquet: str
    val_parquet: str
    tool_config: str
    facts: dict


def default_data_dir() -> str:
    """``$VERL_RESRL_TINY_TOOLS_DIR`` or ``~/.cache/verl_resrl/resrl_tiny_tools``."""
    return os.path.expanduser(os.environ.get("VERL_RESRL_TINY_TOOLS_DIR", "~/.cache/verl_resrl/resrl_tiny_tools"))


def _assets(data_dir: str, facts: dict) -> TinyToolsAssets:
    return TinyToolsAssets(data_dir, os.path.join(data_dir, "model"), os.path.join(data_dir, "train.parquet"),
                           os.path.join(data_dir, "val.parquet"), TOOL_CONFIG, facts)


def ensure_tiny_tools_assets(data_dir: str, *, rebuild: bool = False, settings: TinyToolsBuildSettings | None = None,
                             retrain: bool = False) -> TinyToolsAssets:
    """The assets under ``data_dir``, built first if missing (or ``rebuild``); ``retrain``: not the committed weights."""
    settings = settings or TinyToolsBuildSettings()
    data_dir, facts = ensure_built(data_dir, BUILD_DIR, settings.digest(), settings.as_dict(),
                                   lambda staging: build_into(staging, settings, retrain=retrain), rebuild=rebuild)
    return _assets(data_dir, facts)


def build_into(out_dir: str, settings: TinyToolsBuildSettings, *, retrain: bool = False) -> dict:
    """Generate the task, write the parquet files, build + warm-start (or install) + evaluate + save the model."""
    from transformers import AutoTokenizer

    from verl_resrl.tiny import model as tiny_model
    from verl_resrl.tiny_tools import task, warmstart
    from verl_resrl.tiny_tools.chat_template import save_tools_tokenizer
    from verl_resrl.tiny_tools.reward import is_correct

    start = time.perf_counter()
    record = None if retrain else committed.find(TASK, settings.digest())
    what = "the committed warm start" if record else f"{settings.warmstart.steps} warm-start steps, ~10 min on 2 cores"
    _log(f"building the tiny tool task into {out_dir} ({what})")
    splits = task.generate_splits(settings.task)
    task.write_parquet(splits["train"], "train", os.path.join(out_dir, "train.parquet"))
    task.write_parquet(splits["val"], "val", os.path.join(out_dir, "val.parquet"))
    model_dir = os.path.join(out_dir, "model")
    save_tools_tokenizer(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # train with exactly what verl will load
    model = tiny_model.build_model(settings.model)
    if record is not None:
        return committed.install(model, TASK, record, model_dir)
    sft = warmstart.train(model, tokenizer, splits["sft"], settings.warmstart, log=_log)
    eval_start = time.perf_counter()
    warm = warmstart.evaluate(model, tokenizer, splits["val"], is_correct, settings.eval)
    tiny_model.save_model(model, model_dir)
    _log(f"warm start: greedy accuracy {warm['greedy_accuracy']:.3f}, sampled {warm['sampled_accuracy']:.3f} on "
         f"{len(splits['val'])} validation prompts; tool used in {warm['greedy_tool_fraction']:.0%} of greedy and "
         f"{warm['sampled_tool_fraction']:.0%} of sampled rollouts")
    max_prompt, max_response = warmstart.example_token_lengths(tokenizer, splits["val"] + splits["train"])
    return {"data_source": DATA_SOURCE, "num_train": len(splits["train"]), "num_val": len(splits["val"]),
            "num_sft": len(splits["sft"]), "num_parameters": tiny_model.count_parameters(model),
            "vocab_size": len(tokenizer), "max_prompt_tokens": max_prompt, "max_response_tokens": max_response,
            **sft, **warm, "eval_seconds": time.perf_counter() - eval_start,
            "build_seconds": time.perf_counter() - start, "weights_sha256": tiny_model.weights_sha256(model),
            "cpu": _cpu_summary(), "weights_source": "trained here"}


def _log(message: str) -> None:
    print(f"[resrl_tiny_tools] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """CLI: build (or reuse) the assets under ``--out`` and print their paths and facts."""
    committed.build_cli(argv, prog="python -m verl_resrl.tiny_tools.build", description=__doc__.split("\n")[0],
                        task=TASK, default_dir=default_data_dir(), ensure=ensure_tiny_tools_assets,
                        errors=(TinyToolsAssetsError,), marker_name=MARKER)


if __name__ == "__main__":
    main()
