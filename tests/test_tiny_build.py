"""ensure_tiny_assets: builds once, caches, never overwrites what it did not build; the warm start learns."""

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_resrl.tiny import build, task, warmstart
from verl_resrl.tiny.model import TinyModelConfig, build_model

# A build of a few seconds for the cache/overwrite rules: 2 SFT steps, a handful of problems.
MICRO = build.TinyBuildSettings(
    task=task.ArithTaskConfig(num_val=8, num_train=16, num_sft=64),
    warmstart=warmstart.WarmStartConfig(steps=2, batch_size=8),
    eval=warmstart.EvalConfig(samples_per_prompt=1, max_new_tokens=8),
)
# The default build's code on an easier slice of the task (operands 0..4, at most 3 terms) and 100 warm-start steps
# (~10 s on 2 idle cores instead of ~50 s): it must still learn something.
SHORT = build.TinyBuildSettings(
    task=task.ArithTaskConfig(num_val=48, num_train=16, num_sft=300, max_operand=4, max_terms=3),
    warmstart=warmstart.WarmStartConfig(steps=100),
    eval=warmstart.EvalConfig(samples_per_prompt=2, max_new_tokens=32),
)


def answered_correctly(response: str, truth: str) -> bool:
    """Test-side reference check: the last line is exactly ``Answer: <truth>``."""
    return response.strip().split("\n")[-1] == f"Answer: {truth}"


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("micro") / "assets"
    return build.ensure_tiny_assets(str(data_dir), settings=MICRO)


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    return build.ensure_tiny_assets(str(tmp_path_factory.mktemp("short")), settings=SHORT)


def test_build_writes_the_layout_and_facts(micro):
    assert sorted(os.listdir(micro.data_dir)) == sorted(
        [build.LOCK, build.MARKER, "model", "train.parquet", "val.parquet"]
    )
    assert len(pd.read_parquet(micro.train_parquet)) == 16 and len(pd.read_parquet(micro.val_parquet)) == 8
    assert AutoTokenizer.from_pretrained(micro.model_dir).encode("\n", add_special_tokens=False) == [10]
    marker = json.load(open(os.path.join(micro.data_dir, build.MARKER)))
    assert marker["settings_hash"] == MICRO.digest() and marker["facts"] == micro.facts
    for key in ("greedy_accuracy", "sampled_accuracy", "max_prompt_tokens", "max_response_tokens", "build_seconds"):
        assert key in micro.facts, key


def test_second_call_reuses_the_build(micro):
    weights = os.path.join(micro.model_dir, "model.safetensors")
    before = os.stat(weights)
    again = build.ensure_tiny_assets(micro.data_dir, settings=MICRO)
    assert again == micro
    after = os.stat(weights)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_refuses_a_directory_with_files_it_did_not_build(tmp_path):
    user_file = tmp_path / "notes.txt"
    user_file.write_text("mine")
    for rebuild in (False, True):
        with pytest.raises(build.TinyAssetsError, match=re.escape(str(tmp_path)) + ".*notes.txt"):
            build.ensure_tiny_assets(str(tmp_path), rebuild=rebuild, settings=MICRO)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"] and user_file.read_text() == "mine"


def test_refuses_a_marker_it_did_not_write(tmp_path):
    (tmp_path / build.MARKER).write_text(json.dumps({"builder": "someone.else"}))
    with pytest.raises(build.TinyAssetsError, match="not a marker written by"):
        build.ensure_tiny_assets(str(tmp_path), rebuild=True, settings=MICRO)


def test_other_settings_need_rebuild_which_keeps_user_files(tmp_path):
    data_dir = str(tmp_path)
    first = build.ensure_tiny_assets(data_dir, settings=MICRO)
    first_val = pd.read_parquet(first.val_parquet)
    (tmp_path / "my_results.csv").write_text("keep me")
    other_task = task.ArithTaskConfig(seed=1, num_val=8, num_train=16, num_sft=64)
    other = build.TinyBuildSettings(**{**MICRO.__dict__, "task": other_task})
    with pytest.raises(build.TinyAssetsError, match=re.escape(data_dir) + ".*other settings.*rebuild"):
        build.ensure_tiny_assets(data_dir, settings=other)
    assert build.ensure_tiny_assets(data_dir, settings=MICRO) == first  # the refusal changed nothing
    rebuilt = build.ensure_tiny_assets(data_dir, rebuild=True, settings=other)
    assert (tmp_path / "my_results.csv").read_text() == "keep me"
    assert not pd.read_parquet(rebuilt.val_parquet).equals(first_val)
    assert build.ensure_tiny_assets(data_dir, settings=other) == rebuilt
    assert not [e for e in os.listdir(data_dir) if e.startswith(build.TMP_PREFIX)]


def test_incomplete_build_is_an_error_until_rebuilt(tmp_path):
    assets = build.ensure_tiny_assets(str(tmp_path), settings=MICRO)
    os.remove(assets.train_parquet)
    with pytest.raises(build.TinyAssetsError, match="missing train.parquet"):
        build.ensure_tiny_assets(str(tmp_path), settings=MICRO)
    assert os.path.exists(build.ensure_tiny_assets(str(tmp_path), rebuild=True, settings=MICRO).train_parquet)


def test_leftovers_of_an_interrupted_build_are_cleared(tmp_path):
    stale = tmp_path / (build.TMP_PREFIX + "killed")
    (stale / "model").mkdir(parents=True)
    (tmp_path / build.LOCK).touch()
    assets = build.ensure_tiny_assets(str(tmp_path), settings=MICRO)
    assert not stale.exists() and os.path.isdir(assets.model_dir)


def test_cli_refuses_foreign_dirs_and_other_settings(micro, tmp_path):
    (tmp_path / "data.bin").write_text("x")
    refused = subprocess.run(
        [sys.executable, "-m", "verl_resrl.tiny.build", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert refused.returncode == 2 and str(tmp_path) in refused.stderr and "data.bin" in refused.stderr
    # the CLI builds default settings; a MICRO directory therefore must be refused as "other settings"
    other = subprocess.run(
        [sys.executable, "-m", "verl_resrl.tiny.build", "--out", micro.data_dir],
        capture_output=True, text=True, timeout=300,
    )
    assert other.returncode == 2 and "other settings" in other.stderr


@pytest.mark.slow  # left out of the fast tier (launch/run_tests.sh --fast)
def test_warm_start_beats_a_model_trained_from_scratch(short):
    """Same prompts, same decoding, independent correctness check: the warm-started model answers some."""
    problems = task.generate_splits(SHORT.task)["val"]
    tokenizer = AutoTokenizer.from_pretrained(short.model_dir)
    warm_model = AutoModelForCausalLM.from_pretrained(short.model_dir)
    warm = warmstart.evaluate(warm_model, tokenizer, problems, answered_correctly, SHORT.eval)
    scratch = warmstart.evaluate(build_model(TinyModelConfig()), tokenizer, problems, answered_correctly, SHORT.eval)
    assert warm["greedy_accuracy"] > scratch["greedy_accuracy"]
    assert warm["sampled_accuracy"] > scratch["sampled_accuracy"]
    # the build's own measurement (with the RL reward function) agrees on the greedy decode
    assert short.facts["greedy_accuracy"] == pytest.approx(warm["greedy_accuracy"])
    # the fingerprints in the facts: of the saved weights, and of the seeded initialisation before the warm start
    from verl_resrl.tiny.model import weights_sha256

    assert short.facts["weights_sha256"] == weights_sha256(warm_model)
    assert short.facts["initial_weights_sha256"] == weights_sha256(build_model(SHORT.model))
    assert short.facts["initial_weights_sha256"] != short.facts["weights_sha256"]
    assert "logical CPUs" in short.facts["cpu"]


def test_warm_start_mixes_styles_at_the_configured_rate(micro):
    """Each SFT example is direct with probability direct_answer_fraction, drawn independently of the problem."""
    tokenizer = AutoTokenizer.from_pretrained(micro.model_dir)
    problems = task.generate_splits(task.ArithTaskConfig(num_val=0, num_train=0, num_sft=2000))["sft"]

    def direct_share(fraction, seed=0):
        cfg = warmstart.WarmStartConfig(direct_answer_fraction=fraction, seed=seed)
        responses = [tokenizer.decode([t for t in labels if t >= 0], skip_special_tokens=True)
                     for _, labels in warmstart.sft_examples(tokenizer, problems, cfg)]
        for problem, response in zip(problems, responses):
            assert response in (problem.solution(), problem.direct_solution())
        return [r == p.direct_solution() for p, r in zip(problems, responses)]

    assert not any(direct_share(0.0)) and all(direct_share(1.0))
    half = direct_share(0.5)
    assert abs(sum(half) / len(half) - 0.5) < 0.05  # 2000 draws: 4.5 standard deviations
    assert direct_share(0.5) == half and direct_share(0.5, seed=1) != half  # seeded
    # independent of the problem: the share is the same on 2-term and on 4-term problems
    by_terms = {n: [d for p, d in zip(problems, half) if len(p.operands) == n] for n in (2, 4)}
    assert all(abs(sum(v) / len(v) - 0.5) < 0.1 for v in by_terms.values())


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: warmstart.WarmStartConfig(lr=0.0), "lr"),
        (lambda: warmstart.WarmStartConfig(steps=-1), "steps"),
        (lambda: warmstart.WarmStartConfig(batch_size=0), "batch_size"),
        (lambda: warmstart.WarmStartConfig(direct_answer_fraction=1.5), "direct_answer_fraction"),
        (lambda: warmstart.WarmStartConfig(direct_answer_fraction=-0.1), "direct_answer_fraction"),
        (lambda: warmstart.EvalConfig(samples_per_prompt=0), "samples_per_prompt"),
        (lambda: warmstart.EvalConfig(temperature=0.0), "temperature"),
    ],
)
def test_bad_warm_start_settings_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()
