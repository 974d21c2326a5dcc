"""The study report on hand-made eval outputs: per-prompt tables from stored samples, tables, verdict wording."""

import json
import os

import numpy as np

from verl_resrl.study.report import summary_table, verdict, metric_list
from verl_resrl.study.tables import eval_columns, mean_curve, training_curves

N = 4
BENCH = "toy"


def write_eval(path, prompts):
    """An eval output folder: ``prompts`` is a list of per-prompt lists of (correct, answer, neg_log_prob, tokens)."""
    os.makedirs(os.path.join(path, "samples"))
    with open(os.path.join(path, "samples", f"{BENCH}.jsonl"), "w") as f:
        for p, samples in enumerate(prompts):
            for s, (ok, answer, nlp, tokens) in enumerate(samples):
                f.write(json.dumps({"prompt_index": p, "sample_index": s, "score": float(ok), "answer": answer,
                                    "neg_log_prob_sum": nlp, "num_tokens": tokens, "response": "",
                                    "finish_reason": "stop", "reason": ""}) + "\n")
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump({"config": {"model_path": "/m"}, "benchmarks": {BENCH: {"n": N, "num_prompts": len(prompts)}}}, f)
    return eval_columns(path, N)


def same(ok, answers, prompts=3):
    return [[(ok, a, 2.0, 4) for a in answers] for _ in range(prompts)]


def test_columns_from_samples_by_hand(tmp_path):
    cols = write_eval(str(tmp_path / "e"), [[(1, "5", 1.0, 2), (0, "4", 3.0, 2), (0, None, 2.0, 4), (0, "4", 2.0, 2)]])
    assert cols[BENCH]["c"].tolist() == [1] and cols[BENCH]["avg"].tolist() == [0.25]
    assert cols[BENCH]["pass@2"].tolist() == [0.5]  # 1 - C(3,2)/C(4,2)
    assert cols[BENCH]["pass@4"].tolist() == [1.0] and cols[BENCH]["distinct"].tolist() == [2.0]
    assert cols[BENCH]["entropy"].tolist() == [8.0 / 10]  # (1+3+2+2) / (2+2+4+2) tokens


def test_tables_and_verdict_follow_the_intervals(tmp_path):
    evals = {
        "resrl": {s: write_eval(str(tmp_path / f"resrl{s}"), same(1, ["5"] * 4)) for s in (1, 2)},
        "nsr": {s: write_eval(str(tmp_path / f"nsr{s}"), same(1, ["5"] * 4)) for s in (1, 2)},
        "grpo": {s: write_eval(str(tmp_path / f"grpo{s}"), same(0, ["1", "2", "3", "4"])) for s in (1, 2)},
    }
    warm = write_eval(str(tmp_path / "warm"), [[(1, "5", 2.0, 4), (1, "5", 2.0, 4), (0, "1", 2.0, 4),
                                                 (0, "2", 2.0, 4)]] * 3)
    table = "\n".join(summary_table(BENCH, evals, warm, metric_list(N, [1])))
    assert "| resrl | 2 | 100.0 ± 0.0 | 100.0 ± 0.0 | 100.0 ± 0.0 | 1.00 ± 0.00 | 0.50 ± 0.00 |" in table
    assert "| warmstart | - | 50.0 | 50.0 | 100.0 | 3.00 | 0.50 |" in table
    lines = verdict(evals, warm, BENCH, "resrl", N, draws=300, level=0.95)
    text = "\n".join(lines)
    assert "beats NSR on Avg (paper: +9.4 Avg@16): **not resolved** — resrl − nsr at avg: +0.0" in text
    assert "beats GRPO on Pass@1 (paper figure): **supported** — resrl − grpo at pass@1: +100.0 (95% CI +100.0..+100.0)" in text
    assert "GRPO loses Pass@4 against the warm start: **supported** — grpo − warmstart at pass@4: -100.0" in text
    assert "resrl loses Pass@4 against the warm start: **not resolved**" in text
    assert "more distinct answers than GRPO (diversity): **contradicted** — resrl − grpo at distinct: -3.0" in text
    assert "2 seed(s) × 3 prompts" in text
    # the warm start's Pass@4 is 1 (2 of 4 correct per prompt), its Pass@2 = 1 - C(2,2)/C(4,2) = 5/6: the far claims
    # are checked again at k = 2
    assert "The warm start's Pass@4 is 100.0" in text and "also checked at k = 2" in text
    assert "GRPO loses Pass@2 against the warm start: **supported** — grpo − warmstart at pass@2: -83.3" in text
    assert "resrl beats GRPO on Pass@2 (paper figure): **supported** — resrl − grpo at pass@2: +100.0" in text


def test_training_curves_average_over_seeds(tmp_path):
    paths = []
    for seed, rewards in ((1, [0.0, 0.2]), (2, [0.2, 0.6])):
        path = tmp_path / f"m{seed}.jsonl"
        path.write_text("\n".join(json.dumps({"step": i + 1, "critic/score/mean": r, "resrl/weight_mean": 0.5,
                                              "val-core/x/acc/mean@1": 0.1 * (i + 1)}) for i, r in enumerate(rewards)))
        paths.append(training_curves(str(path)))
    steps, mean, sd = mean_curve([c["reward"] for c in paths])
    assert steps == [1, 2] and np.allclose(mean, [0.1, 0.4]) and np.allclose(sd, [np.sqrt(0.02), np.sqrt(0.08)])
    assert paths[0]["val_acc"] == [(1, 0.1), (2, 0.2)] and paths[0]["resrl/weight_mean"] == [(1, 0.5), (2, 0.5)]


def test_verdict_adds_no_far_claims_when_the_warm_start_has_room(tmp_path):
    evals = {m: {1: write_eval(str(tmp_path / f"{m}1"), same(1, ["5"] * 4))} for m in ("resrl", "grpo", "nsr")}
    # one of three prompts never solved: the warm start's Pass@4 = 2/3 < 0.95, so k = 4 is informative itself
    warm = write_eval(str(tmp_path / "warm"), same(1, ["5", "5", "1", "2"], prompts=2) + same(0, ["1"] * 4, prompts=1))
    text = "\n".join(verdict(evals, warm, BENCH, "resrl", N, draws=100, level=0.95))
    assert "saturated" not in text and "pass@2" not in text and "Pass@4 against the warm start" in text
