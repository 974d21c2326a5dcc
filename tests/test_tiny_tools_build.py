"""The tool task's build and cache (``verl_resrl.tiny_tools.build``) on shortened settings, and the launcher hook."""

import json
import os

import pytest
from omegaconf import OmegaConf

from verl_resrl.tiny.model import TinyModelConfig
from verl_resrl.tiny.task import ArithTaskConfig
from verl_resrl.tiny_tools import build
from verl_resrl.tiny_tools.launch import prepare_tiny_tools_assets
from verl_resrl.tiny_tools.warmstart import ToolEvalConfig, WarmStartConfig

SMALL = build.TinyToolsBuildSettings(
    task=ArithTaskConfig(num_val=4, num_train=8, num_sft=64),
    model=TinyModelConfig(),
    warmstart=WarmStartConfig(steps=3, batch_size=8),
    eval=ToolEvalConfig(samples_per_prompt=1, max_turn_tokens=8, batch_size=4),
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tools_build") / "assets"
    return build.ensure_tiny_tools_assets(str(out), settings=SMALL)


def test_layout_marker_and_facts(built):
    assert sorted(e for e in os.listdir(built.data_dir) if not e.startswith(".")) == sorted(
        [*build.BUILT_ENTRIES, build.MARKER])
    marker = json.load(open(os.path.join(built.data_dir, build.MARKER)))
    assert marker["builder"] == build.BUILDER and marker["settings_hash"] == SMALL.digest()
    facts = built.facts
    assert (facts["num_val"], facts["num_train"], facts["data_source"]) == (4, 8, "resrl_tiny_tools/arith")
    assert 0.0 <= facts["greedy_accuracy"] <= 1.0 and facts["sft_steps"] == 3
    assert facts["max_response_tokens"] <= 224  # the recipe's data.max_response_length covers the gold transcripts
    assert os.path.isfile(built.tool_config) and built.tool_config.endswith("tools.yaml")


def test_the_model_dir_carries_the_tools_chat_template(built):
    from transformers import AutoTokenizer

    from verl_resrl.tiny_tools.chat_template import TOOLS_CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(built.model_dir)
    assert tok.chat_template == TOOLS_CHAT_TEMPLATE and tok.eos_token == "<|im_end|>"


def test_second_call_reuses_and_other_settings_are_refused(built):
    stat = os.stat(os.path.join(built.model_dir, "model.safetensors"))
    again = build.ensure_tiny_tools_assets(built.data_dir, settings=SMALL)
    assert again.facts == built.facts
    assert os.stat(os.path.join(built.model_dir, "model.safetensors")).st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(build.TinyToolsAssetsError, match="other settings"):
        build.ensure_tiny_tools_assets(built.data_dir)


def test_foreign_files_are_never_built_over(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(build.TinyToolsAssetsError, match="notes.txt"):
        build.ensure_tiny_tools_assets(str(tmp_path), settings=SMALL)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_launcher_hook_fills_only_the_placeholder_keys(built, monkeypatch):
    config = OmegaConf.create({
        "resrl_tiny_tools": {"enable": True, "data_dir": built.data_dir},
        "data": {"train_files": "resrl_tiny_tools", "val_files": "/elsewhere/val.parquet"},
        "actor_rollout_ref": {"model": {"path": "resrl_tiny_tools"},
                              "rollout": {"multi_turn": {"tool_config_path": "resrl_tiny_tools"}}},
    })
    with pytest.raises(build.TinyToolsAssetsError, match="resrl_tiny_tools.rebuild"):
        prepare_tiny_tools_assets(config)  # the default settings differ from this small build's
    monkeypatch.setattr(build, "TinyToolsBuildSettings", lambda: SMALL)  # the hook builds with the defaults
    prepare_tiny_tools_assets(config)
    assert config.data.train_files == built.train_parquet and config.data.val_files == "/elsewhere/val.parquet"
    assert config.actor_rollout_ref.model.path == built.model_dir
    assert config.actor_rollout_ref.rollout.multi_turn.tool_config_path == built.tool_config
    off = OmegaConf.create({"resrl_tiny_tools": {"enable": False}, "data": {"train_files": "resrl_tiny_tools"}})
    prepare_tiny_tools_assets(off)
    assert off.data.train_files == "resrl_tiny_tools"
