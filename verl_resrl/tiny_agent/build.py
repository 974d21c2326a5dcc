"""Build (once) and cache the tiny agent task: model dir (tiny model + byte tokenizer), train/val parquet, facts.

    from verl_resrl.tiny_agent.build import ensure_tiny_agent_assets
    assets = ensure_tiny_agent_assets("~/.cache/verl_resrl/resrl_tiny_agent")

    python -m verl_resrl.tiny_agent.build --out DIR [--rebuild] [--retrain [--publish]]

The default settings install the committed warm start (``verl_resrl/tiny/committed.py``); other settings, or
``--retrain``, train it here on TWX gold transcripts (docs/tiny_agent.md has the measured time). The same caching
rules as the other tiny builders (``verl_resrl/tiny/cached_build.py``), with the marker ``resrl_tiny_agent_build.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

from verl_resrl.agents.agent_loop import AgentOptions
from verl_resrl.tiny import committed
from verl_resrl.tiny.build import _cpu_summary
from verl_resrl.tiny.cached_build import BuildDir, ensure_built
from verl_resrl.tiny.model import TinyModelConfig
from verl_resrl.tiny_agent.task import DATA_SOURCE, AgentTaskConfig
from verl_resrl.tiny_agent.warmstart import AgentEvalConfig, WarmStartConfig

BUILDER = "verl_resrl.tiny_agent.build"
MARKER = "resrl_tiny_agent_build.json"
TASK = "resrl_tiny_agent"  # its folder under verl_resrl/tiny/warm_starts/
BUILD_FORMAT = 1  # bump when the build code changes what a given set of settings produces
# The agent loop's options the transcripts are laid out with; the recipe's resrl_agent block must say the same
# (tests/test_tiny_agent_build.py). The first observation is cut to 120 characters: the admissible actions listed
# after it name every item and container the game can act on, and the room's full description (~300-500 more
# tokens a byte each) would cost more than the model's turns themselves on 2 cores.
AGENT_OPTIONS = AgentOptions(max_turns=6, max_tokens_per_turn=64, max_observation_chars=120, max_envs=8)
RESPONSE_LENGTH = 1024  # the recipe's data.max_response_length: the longest gold response is 893 tokens


class TinyAgentAssetsError(RuntimeError):
    """The data directory holds something this builder will not overwrite or cannot use."""


BUILD_DIR = BuildDir(builder=BUILDER, marker=MARKER, lock=".resrl_tiny_agent_build.lock",
                     tmp_prefix=".resrl_tiny_agent_tmp-", entries=("model", "train.parquet", "val.parquet"),
                     label="tiny-agent", error=TinyAgentAssetsError)


@dataclass(frozen=True)
class TinyAgentBuildSettings:
    """Everything that determines the built assets (their hash is stored in the marker)."""

    task: AgentTaskConfig = field(default_factory=AgentTaskConfig)
    # half the width and three of resrl_tiny's four layers, with room for whole episodes (prompt + response <= 1536
    # tokens): an episode is ~870 tokens against resrl_tiny's ~70, and resrl_tiny's shape trained at ~10 s per batch
    # of 8 episodes here (2 busy cores), too slow for a 15-minute build; head_dim stays 32 (vLLM's CPU attention)
    model: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1, intermediate_size=256,
        max_position_embeddings=2048))
    warmstart: WarmStartConfig = field(default_factory=lambda: WarmStartConfig(
        steps=400, batch_size=8, lr=3e-3, warmup_steps=10, direct_answer_fraction=0.0))
    eval: AgentEvalConfig = field(default_factory=lambda: AgentEvalConfig(samples=1))

    def as_dict(self) -> dict:
        return {"format": BUILD_FORMAT, **asdict(self), "agent_options": asdict(AGENT_OPTIONS),
                "response_length": RESPONSE_LENGTH}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TinyAgentAssets:
    """Paths of a complete build and what was measured while building it."""

    data_dir: str
    model_dir: str
    train_parquet: str
    val_parquet: str
    facts: dict


def default_data_dir() -> str:
    """``$VERL_RESRL_TINY_AGENT_DIR`` or ``~/.cache/verl_resrl/resrl_tiny_agent``."""
    return os.path.expanduser(os.environ.get("VERL_RESRL_TINY_AGENT_DIR", "~/.cache/verl_resrl/resrl_tiny_agent"))


def _assets(data_dir: str, facts: dict) -> TinyAgentAssets:
    return TinyAgentAssets(data_dir, os.path.join(data_dir, "model"), os.path.join(data_dir, "train.parquet"),
                           os.path.join(data_dir, "val.parquet"), facts)


def ensure_tiny_agent_assets(data_dir: str, *, rebuild: bool = False, settings: TinyAgentBuildSettings | None = None,
                             retrain: bool = False) -> TinyAgentAssets:
    """The assets under ``data_dir``, built first if missing (or ``rebuild``); ``retrain``: not the committed weights."""
    settings = settings or TinyAgentBuildSettings()
    data_dir, facts = ensure_built(data_dir, BUILD_DIR, settings.digest(), settings.as_dict(),
                                   lambda staging: build_into(staging, settings, retrain=retrain), rebuild=rebuild)
    return _assets(data_dir, facts)


def save_agent_tokenizer(model_dir: str):
    """The tiny byte tokenizer, its length limit raised to the model's positions (episodes run past 512 bytes)."""
    from transformers import AutoTokenizer

    from verl_resrl.tiny.tokenizer import save_tokenizer

    tokenizer = save_tokenizer(model_dir)
    tokenizer.model_max_length = 2048
    tokenizer.save_pretrained(model_dir)
    return AutoTokenizer.from_pretrained(model_dir)  # train with exactly what verl will load


def build_into(out_dir: str, settings: TinyAgentBuildSettings, *, retrain: bool = False) -> dict:
    """Write the rows, then install the committed warm start, or play the gold paths, train on them and evaluate."""
    from verl_resrl.agents.textworld_express import TwxAdapter
    from verl_resrl.tiny import model as tiny_model
    from verl_resrl.tiny_agent import task, warmstart

    start = time.perf_counter()
    record = None if retrain else committed.find(TASK, settings.digest())
    _log(f"building the tiny agent task into {out_dir} "
         f"({'the committed warm start' if record else f'{settings.warmstart.steps} warm-start steps'})")
    rows = task.generate_rows(settings.task)
    task.write_rows(rows["train"], os.path.join(out_dir, "train.parquet"))
    task.write_rows(rows["val"], os.path.join(out_dir, "val.parquet"))
    model_dir = os.path.join(out_dir, "model")
    tokenizer = save_agent_tokenizer(model_dir)
    model = tiny_model.build_model(settings.model)
    if record is not None:
        return committed.install(model, TASK, record, model_dir)
    adapter = TwxAdapter()
    try:
        transcripts = [task.gold_transcript(adapter, r, AGENT_OPTIONS, settings.task) for r in task.sft_rows(
            settings.task)]
        lengths = [warmstart.encode_transcript(tokenizer, t) for t in transcripts]
        sft = warmstart.train(model, tokenizer, transcripts, settings.warmstart, log=_log)
        tiny_model.save_model(model, model_dir)
        eval_start = time.perf_counter()
        warm = warmstart.evaluate(model, tokenizer, adapter, rows["val"], AGENT_OPTIONS, RESPONSE_LENGTH,
                                  settings.eval)
    finally:
        adapter.close()
    _log(f"warm start: held-out (dev) success {warm['greedy_success']:.3f} greedy, {warm['sampled_success']} "
         f"sampled, on {len(rows['val'])} games")
    return {"data_source": DATA_SOURCE, "num_train": len(rows["train"]), "num_val": len(rows["val"]),
            "num_sft": len(transcripts), "num_parameters": tiny_model.count_parameters(model),
            "max_prompt_tokens": max(n for _, _, n in lengths),
            "max_response_tokens": max(len(ids) - n for ids, _, n in lengths), **sft, **warm,
            "eval_seconds": time.perf_counter() - eval_start, "build_seconds": time.perf_counter() - start,
            "weights_sha256": tiny_model.weights_sha256(model), "cpu": _cpu_summary(),
            "weights_source": "trained here"}


def _log(message: str) -> None:
    print(f"[resrl_tiny_agent] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """CLI: build (or reuse) the assets under ``--out`` and print their paths and facts."""
    committed.build_cli(argv, prog="python -m verl_resrl.tiny_agent.build", description=__doc__.split("\n")[0],
                        task=TASK, default_dir=default_data_dir(), ensure=ensure_tiny_agent_assets,
                        errors=(TinyAgentAssetsError,), marker_name=MARKER)


if __name__ == "__main__":
    main()
