"""Build (once) and cache the tiny task's assets: model dir with tokenizer, train/val parquet, build facts.

    from verl_resrl.tiny.build import ensure_tiny_assets
    assets = ensure_tiny_assets("~/.cache/verl_resrl/resrl_tiny")   # builds on first call, returns at once later

    python -m verl_resrl.tiny.build --out DIR [--rebuild] [--retrain [--publish]]

The default settings install the committed warm start (``verl_resrl/tiny/committed.py``: the same weights on every
machine, seconds instead of ~15 min); other settings, or ``--retrain``, train it here.

Layout of ``DIR``: ``model/`` (weights, config, generation config, tokenizer), ``train.parquet``, ``val.parquet`` and
the marker ``resrl_tiny_build.json`` (settings, their hash, the files built, the build facts). The marker is written
last, so its presence means a complete build. The build never touches what it did not make: a directory with files
but no marker, or with a marker of other settings, is an error naming the path (``rebuild=True`` replaces only a
build of ours).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

from . import committed
from .cached_build import BuildDir, ensure_built
from .model import TinyModelConfig
from .task import DATA_SOURCE, ArithTaskConfig
from .warmstart import EvalConfig, WarmStartConfig

BUILDER = "verl_resrl.tiny.build"  # written into the marker (not __name__: that is "__main__" under -m)
MARKER = "resrl_tiny_build.json"
LOCK = ".resrl_tiny_build.lock"  # serialises concurrent builders of one directory (flock)
TMP_PREFIX = ".resrl_tiny_tmp-"  # staging folders of (possibly interrupted) builds of ours
BUILT_ENTRIES = ("model", "train.parquet", "val.parquet")
TASK = "resrl_tiny"  # its folder under verl_resrl/tiny/warm_starts/
BUILD_FORMAT = 3  # bump when the build code changes what a given set of settings produces


class TinyAssetsError(RuntimeError):
    """The data directory holds something this builder will not overwrite or cannot use."""


BUILD_DIR = BuildDir(builder=BUILDER, marker=MARKER, lock=LOCK, tmp_prefix=TMP_PREFIX, entries=BUILT_ENTRIES,
                     label="tiny-task", error=TinyAssetsError)


@dataclass(frozen=True)
class TinyBuildSettings:
    """Everything that determines the built assets (their hash is stored in the marker)."""

    task: ArithTaskConfig = field(default_factory=ArithTaskConfig)
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def as_dict(self) -> dict:
        return {"format": BUILD_FORMAT, **asdict(self)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TinyAssets:
    """Paths of a complete build and what was measured while building it."""

    data_dir: str
    model_dir: str  # AutoModelForCausalLM / AutoTokenizer directory: actor_rollout_ref.model.path
    train_parquet: str  # data.train_files
    val_parquet: str  # data.val_files
    facts: dict  # warm-start accuracies, token lengths, sizes, timings (docs/tiny_task.md lists the keys)


def default_data_dir() -> str:
    """``$VERL_RESRL_TINY_DIR`` or ``~/.cache/verl_resrl/resrl_tiny``."""
    return os.path.expanduser(os.environ.get("VERL_RESRL_TINY_DIR", "~/.cache/verl_resrl/resrl_tiny"))


def ensure_tiny_assets(
    data_dir: str, *, rebuild: bool = False, settings: TinyBuildSettings | None = None, retrain: bool = False
) -> TinyAssets:
    """Return the assets under ``data_dir``, building them first if they are missing (or ``rebuild`` is set).

    A build installs the committed warm start when one was made with ``settings``; ``retrain`` trains it instead.
    """
    settings = settings or TinyBuildSettings()
    data_dir, facts = ensure_built(data_dir, BUILD_DIR, settings.digest(), settings.as_dict(),
                                   lambda staging: build_into(staging, settings, retrain=retrain), rebuild=rebuild)
    return _assets(data_dir, facts)


def _assets(data_dir: str, facts: dict) -> TinyAssets:
    return TinyAssets(
        data_dir=data_dir,
        model_dir=os.path.join(data_dir, "model"),
        train_parquet=os.path.join(data_dir, "train.parquet"),
        val_parquet=os.path.join(data_dir, "val.parquet"),
        facts=facts,
    )


def build_into(out_dir: str, settings: TinyBuildSettings, *, retrain: bool = False) -> dict:
    """Generate the task, write the parquet files, build + warm-start (or install) + evaluate + save the model."""
    from transformers import AutoTokenizer

    from . import model as tiny_model
    from . import task, warmstart
    from .reward import is_correct
    from .tokenizer import save_tokenizer

    start = time.perf_counter()
    record = None if retrain else committed.find(TASK, settings.digest())
    what = "the committed warm start" if record else f"{settings.warmstart.steps} warm-start steps, ~15 min on 2 cores"
    _log(f"building the tiny task into {out_dir} ({what})")
    splits = task.generate_splits(settings.task)
    task.write_parquet(splits["train"], "train", os.path.join(out_dir, "train.parquet"))
    task.write_parquet(splits["val"], "val", os.path.join(out_dir, "val.parquet"))

    model_dir = os.path.join(out_dir, "model")
    save_tokenizer(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # train with exactly what verl will load
    model = tiny_model.build_model(settings.model)
    initial_sha = tiny_model.weights_sha256(model)  # the seeded initialisation: the same on every machine
    if record is not None:
        return committed.install(model, TASK, record, model_dir)
    sft = warmstart.train(model, tokenizer, splits["sft"], settings.warmstart, log=_log)
    warm = warmstart.evaluate(model, tokenizer, splits["val"], is_correct, settings.eval)
    tiny_model.save_model(model, model_dir)
    _log(f"warm start: greedy accuracy {warm['greedy_accuracy']:.3f}, sampled {warm['sampled_accuracy']:.3f} "
         f"(T={settings.eval.temperature}) on {len(splits['val'])} validation prompts; worked style in "
         f"{warm['greedy_worked_fraction']:.0%} of greedy and {warm['sampled_worked_fraction']:.0%} of sampled "
         "responses")

    max_prompt, max_response = warmstart.example_token_lengths(tokenizer, splits["val"] + splits["train"])
    return {
        "data_source": DATA_SOURCE,
        "num_train": len(splits["train"]),
        "num_val": len(splits["val"]),
        "num_sft": len(splits["sft"]),
        "num_parameters": tiny_model.count_parameters(model),
        "vocab_size": len(tokenizer),
        "max_prompt_tokens": max_prompt,
        "max_response_tokens": max_response,  # the gold solutions, <|im_end|> included
        **sft,
        **warm,
        "build_seconds": time.perf_counter() - start,
        # what to compare across machines: the initialisation is identical everywhere; the warm-started weights
        # differ where float32 kernels differ (docs/tiny_task.md, "Reproducibility")
        "initial_weights_sha256": initial_sha,
        "weights_sha256": tiny_model.weights_sha256(model),
        "cpu": _cpu_summary(),
        "weights_source": "trained here",
    }


def _cpu_summary() -> str:
    """The CPU's model name and the vector extensions that change float32 kernels (AVX2 / AVX-512 / bf16)."""
    name, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and name == "unknown":
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    ext = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(ext) or 'no AVX2'}; {os.cpu_count()} logical CPUs)"


def _log(message: str) -> None:
    print(f"[resrl_tiny] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """CLI: build (or reuse) the assets under ``--out`` and print their paths and facts."""
    committed.build_cli(argv, prog="python -m verl_resrl.tiny.build", description=__doc__.split("\n")[0],
                        task=TASK, default_dir=default_data_dir(), ensure=ensure_tiny_assets,
                        errors=(TinyAssetsError,), marker_name=MARKER)


if __name__ == "__main__":
    main()
