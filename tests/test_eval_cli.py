"""The eval CLI on CPU with the tiny model: outputs, consistency with the verifier, resumption after interruption."""

import json
import math
import os
import subprocess
import sys
from collections import Counter

import pytest

from verl_resrl.data.convert import convert_records, read_local_records, write_parquet
from verl_resrl.data.sources import SOURCES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "verl_resrl", "eval", "config")
FIXTURES = os.path.join(REPO, "tests", "fixtures", "data")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N = 8


@pytest.fixture(scope="module")
def tiny():
    """The tiny task's warm-started model and val parquet (built once, cached; see verl_resrl/tiny/build.py)."""
    from verl_resrl.tiny.build import default_data_dir, ensure_tiny_assets

    return ensure_tiny_assets(default_data_dir())


def benchmark_parquet(tmp_path_factory, name, fixture):
    rows, _ = convert_records(SOURCES[name], read_local_records(os.path.join(FIXTURES, fixture)))
    path = str(tmp_path_factory.mktemp("bench") / f"{name}.parquet")
    write_parquet(rows, path)
    return path


@pytest.fixture(scope="module")
def aime_parquet(tmp_path_factory):
    return benchmark_parquet(tmp_path_factory, "aime2024", "aime2024.jsonl")


@pytest.fixture(scope="module")
def random_tiny_model(tmp_path_factory):
    """A randomly initialised tiny Qwen2 + byte tokenizer (the tiny task's architecture, no warm start)."""
    from verl_resrl.tiny.model import build_model, save_model
    from verl_resrl.tiny.tokenizer import save_tokenizer

    path = str(tmp_path_factory.mktemp("random_tiny"))
    save_model(build_model(), path)
    save_tokenizer(path)
    return path


def read_samples(path):
    by_prompt = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            by_prompt.setdefault(record["prompt_index"], []).append(record)
    return by_prompt


def ground_truths(parquet):
    import pandas as pd

    return [rm["ground_truth"] for rm in pd.read_parquet(parquet)["reward_model"]]


def reference_metrics(by_prompt):
    """Avg, unbiased Pass@k from math.comb, majority vote and distinct answers, straight from the stored scores."""
    correct = [sum(r["score"] > 0 for r in rs) for _, rs in sorted(by_prompt.items())]
    ref = {"avg": sum(correct) / (N * len(correct))}
    for k in (1, 2, 4, 8):
        ref[f"pass@{k}"] = sum(1 - math.comb(N - c, k) / math.comb(N, k) for c in correct) / len(correct)
    majority, distinct = [], []
    for _, rs in sorted(by_prompt.items()):
        votes = Counter(r["answer"] for r in rs if r["answer"])
        distinct.append(len(votes))
        if votes:
            top = max(votes.values())
            winner = next(r["answer"] for r in rs if r["answer"] and votes[r["answer"]] == top)
            majority.append(next(r["score"] > 0 for r in rs if r["answer"] == winner))
        else:
            majority.append(False)
    ref["maj"] = sum(majority) / len(majority)
    ref["distinct"] = sum(distinct) / len(distinct)
    return ref


@pytest.mark.e2e
def test_cli_end_to_end_on_cpu(tiny, aime_parquet, tmp_path):
    """python -m verl_resrl.eval: n=8 samples, JSON + markdown + PNG, numbers consistent with the verifier."""
    from verl_resrl.rewards.math import score

    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "verl_resrl.eval", f"model_path={tiny.model_dir}",
        f"benchmarks=[{tiny.val_parquet},{aime_parquet}]", f"output_dir={out}", "run_name=tiny", f"n={N}",
        "max_prompts=16", "prompts_per_batch=8", "sampling.max_new_tokens=48", "log_probs=true",
        "verifier.num_workers=1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["benchmarks"]) == {"resrl_tiny/arith", "aime2024"}
    table = (out / "results.md").read_text()
    assert table.splitlines()[0] == "| run | benchmark | Avg@8 | Pass@1 | Pass@2 | Pass@4 | Pass@8 | distinct answers |"
    assert proc.stdout.count("| tiny |") == 2  # the table is printed too
    for bench, stem, truths in (("resrl_tiny/arith", "resrl_tiny_arith", ground_truths(tiny.val_parquet)),
                                ("aime2024", "aime2024", ground_truths(aime_parquet))):
        metrics = json.loads((out / "metrics" / f"{stem}.json").read_text())
        assert metrics == results["benchmarks"][bench]
        by_prompt = read_samples(out / "samples" / f"{stem}.jsonl")
        assert sorted(by_prompt) == list(range(min(16, len(truths))))
        assert all(sorted(r["sample_index"] for r in rs) == list(range(N)) for rs in by_prompt.values())
        # every stored verdict is what the verifier says about the stored response (binary convention)
        for p, rs in by_prompt.items():
            for r in rs:
                direct = score(r["response"], truths[p], reward_convention="binary")
                assert (r["score"], r["answer"]) == (direct["score"], direct["answer"])
        ref = reference_metrics(by_prompt)
        assert metrics["avg@8"] == pytest.approx(ref["avg"], abs=1e-12)
        for k in (1, 2, 4, 8):
            assert metrics[f"pass@{k}"] == pytest.approx(ref[f"pass@{k}"], abs=1e-12)
        assert metrics["maj@8"] == pytest.approx(ref["maj"]) and metrics["distinct_answers"] == pytest.approx(ref["distinct"])
        assert metrics["mean_token_entropy"] > 0
        row = f"| tiny | {bench} | {100 * ref['avg']:.1f} | {100 * ref['pass@1']:.1f} |"
        assert row in table
        assert (out / f"pass_at_k_{stem}.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "pass_at_k.png").read_bytes()[:8] == PNG_MAGIC
    # the warm-started tiny model solves part of its own task: the curve is not degenerate
    arith = results["benchmarks"]["resrl_tiny/arith"]
    assert 0 < arith["pass@1"] < 1 and arith["pass@8"] >= arith["pass@4"] >= arith["pass@2"] >= arith["pass@1"]


class InProcessVerifier:
    """The math verifier called in-process (``rewards.math.score``, the function the pool's workers run)."""

    def __init__(self, num_workers, timeout_s):
        from verl_resrl.rewards.math import score

        self.score_fn = score

    def score(self, responses, truths):
        return [self.score_fn(r, g, reward_convention="binary") for r, g in zip(responses, truths)]

    def close(self):
        pass


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return hydra_compose(config_name="eval", overrides=overrides)


def test_resume_after_interruption_generates_only_missing_samples(random_tiny_model, tmp_path_factory, monkeypatch):
    from verl_resrl.eval import generation, runner

    monkeypatch.setattr(runner, "Verifier", InProcessVerifier)
    calls = []
    real_sample = generation.HFBackend.sample

    def recording_sample(self, prompt_ids, counts, seeds, settings, log_probs):
        calls.append(list(counts))
        if len(calls) == 2 and interrupt:
            raise KeyboardInterrupt  # Ctrl-C during the second batch
        return real_sample(self, prompt_ids, counts, seeds, settings, log_probs)

    monkeypatch.setattr(generation.HFBackend, "sample", recording_sample)
    math500 = benchmark_parquet(tmp_path_factory, "math500", "math500.jsonl")  # 3 prompts
    out = tmp_path_factory.mktemp("resume")
    overrides = [f"model_path={random_tiny_model}", f"benchmarks=[{math500}]", f"output_dir={out}", f"n={N}",
                 "prompts_per_batch=1", "sampling.max_new_tokens=8"]
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        runner.run_eval(compose(overrides))
    store = out / "samples" / "math500.jsonl"
    lines = store.read_text().splitlines(keepends=True)
    assert len(lines) == N  # the first batch (prompt 0) was persisted
    # also lose the last 3 samples of prompt 0 and leave half a line, as a kill during a write would
    kept = "".join(lines[: N - 3])
    store.write_text(kept + lines[N - 3][:25])

    interrupt, calls[:] = False, []
    first = runner.run_eval(compose(overrides))
    assert calls == [[3], [N], [N]]  # prompt 0 completed with 3 samples, then prompts 1 and 2
    final = store.read_text()
    assert final.startswith(kept)  # stored samples were reused, byte for byte
    assert sorted(r["sample_index"] for r in read_samples(store)[0]) == list(range(N))
    assert first["benchmarks"]["math500"]["num_prompts"] == 3

    calls[:] = []
    monkeypatch.setattr(runner._Engine, "start", lambda self: pytest.fail("a complete store must not load the model"))
    again = runner.run_eval(compose(overrides))
    assert calls == [] and again["benchmarks"] == first["benchmarks"] and store.read_text() == final

    with pytest.raises(ValueError, match="sampling"):
        runner.run_eval(compose(overrides + ["sampling.temperature=1.0"]))
