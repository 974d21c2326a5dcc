"""Benchmark metrics from stored samples, the resumable sample store, tables, plots and the compare CLI."""

import json
import math

import pytest

from verl_resrl.eval.compare import main as compare_main
from verl_resrl.eval.report import benchmark_metrics, markdown_table, pass_curve, write_json, write_reports
from verl_resrl.eval.samples import SampleRecord, SampleStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rec(prompt, sample, correct, answer, response="x", tokens=4, finish="stop", nlp=None):
    return SampleRecord(
        prompt_index=prompt, sample_index=sample, response=response, num_tokens=tokens, finish_reason=finish,
        score=1.0 if correct else 0.0, answer=answer, reason="correct" if correct else "wrong", neg_log_prob_sum=nlp,
    )


def hand_samples():
    """Prompt 0: 1 of 4 correct; prompt 1: 3 of 4; prompt 2: none, one without answer, one truncated."""
    return {
        0: [rec(0, 0, 0, "5", "a b a b"), rec(0, 1, 0, "5", "a b"), rec(0, 2, 1, "6", "c"), rec(0, 3, 0, "7", "a")],
        1: [rec(1, 0, 1, "2", "x y"), rec(1, 1, 1, "2", "x y"), rec(1, 2, 0, "3", "z"), rec(1, 3, 1, "2", "x y")],
        2: [rec(2, 0, 0, None, "q", finish="length"), rec(2, 1, 0, "1"), rec(2, 2, 0, "1"), rec(2, 3, 0, "4")],
    }


def test_benchmark_metrics_by_hand():
    m = benchmark_metrics(hand_samples(), n=4)
    assert m["num_prompts"] == 3 and m["n"] == 4
    assert m["avg@4"] == pytest.approx(4 / 12)
    for k in (1, 2, 4):
        expected = sum(1 - math.comb(4 - c, k) / math.comb(4, k) for c in (1, 3, 0)) / 3
        assert m[f"pass@{k}"] == pytest.approx(expected, abs=1e-12)
    assert "avg@16" not in m
    # majority: prompt 0 votes "5" (wrong), prompt 1 "2" (right), prompt 2 "1" (wrong)
    assert m["maj@4"] == pytest.approx(1 / 3)
    assert m["distinct_answers"] == pytest.approx((3 + 2 + 2) / 3)
    # prompt 0 words: a b a b | a b | c | a -> unigrams 8 total, {a,b,c} unique; bigrams (a,b),(b,a),(a,b),(a,b): 2/4
    # prompt 1: x y | x y | z | x y -> 7 unigrams, 3 unique; bigrams 3 total, 1 unique
    # prompt 2: q | x | x | x -> 4 unigrams, 2 unique; no bigrams -> 0
    assert m["distinct_1"] == pytest.approx((3 / 8 + 3 / 7 + 2 / 4) / 3)
    assert m["distinct_2"] == pytest.approx((2 / 4 + 1 / 3 + 0) / 3)
    assert m["truncated_fraction"] == pytest.approx(1 / 12)
    assert m["no_answer_fraction"] == pytest.approx(1 / 12)
    assert m["mean_response_tokens"] == 4
    assert "mean_token_entropy" not in m  # no log-probs recorded


def test_benchmark_metrics_entropy_avg16_and_first_n():
    samples = {0: [rec(0, s, s % 2, str(s), tokens=2, nlp=1.0 + s) for s in range(20)]}
    m = benchmark_metrics(samples, n=16)  # uses samples 0..15 only
    assert m["avg@16"] == pytest.approx(8 / 16)
    m20 = benchmark_metrics(samples, n=20)  # Avg@16's estimate from 20 samples is their mean
    assert m20["avg@16"] == m20["avg@20"] == pytest.approx(10 / 20)
    assert m["mean_token_entropy"] == pytest.approx(sum(1.0 + s for s in range(16)) / 32)
    assert pass_curve(m)[0] == [1, 2, 4, 8, 16]
    with pytest.raises(ValueError, match="fewer than n=32"):
        benchmark_metrics(samples, n=32)


def test_sample_store_roundtrip_interrupted_line_and_settings(tmp_path):
    store = SampleStore(str(tmp_path), "aime")
    store.check_settings({"model": "a", "temperature": 0.6})
    store.check_settings({"model": "a", "temperature": 0.6})  # same settings: fine
    with pytest.raises(ValueError, match="temperature: stored 0.6, now 1.0"):
        store.check_settings({"model": "a", "temperature": 1.0})
    records = [rec(0, 1, 1, "3"), rec(0, 0, 0, "4"), rec(1, 0, 1, None)]
    store.append(records)
    with open(store.path, "a") as f:
        f.write('{"prompt_index": 1, "sample_ind')  # a write cut short by a kill
    loaded = store.load()
    assert [r.sample_index for r in loaded[0]] == [0, 1]  # sorted by sample index
    assert loaded[1] == [records[2]]
    store.append([rec(1, 1, 0, "9")])  # the truncated tail was removed, so this line parses
    assert [r.answer for r in store.load()[1]] == [None, "9"]
    with open(store.path, "a") as f:
        f.write("not json\n" + json.dumps(rec(2, 0, 1, "1").__dict__) + "\n")
    with pytest.raises(ValueError, match="line 5 is corrupt"):
        store.load()


def test_sample_store_refuses_repeated_sample_indices(tmp_path):
    store = SampleStore(str(tmp_path), "b")
    store.append([rec(0, 0, 1, "1"), rec(0, 0, 1, "1")])
    with pytest.raises(ValueError, match="repeated sample indices"):
        store.load()


def _metrics(p1, p2):
    return {"n": 2, "avg@2": p1, "pass@1": p1, "pass@2": p2, "distinct_answers": 1.5}


def test_markdown_table_and_plots(tmp_path):
    runs = {"GRPO": {"aime2024": _metrics(0.25, 0.5)}, "ResRL": {"aime2024": _metrics(0.5, 0.75)}}
    table = markdown_table(runs).splitlines()
    assert table[0] == "| run | benchmark | Avg@2 | Pass@1 | Pass@2 | distinct answers |"
    assert table[2] == "| GRPO | aime2024 | 25.0 | 25.0 | 50.0 | 1.50 |"
    assert table[3] == "| ResRL | aime2024 | 50.0 | 50.0 | 75.0 | 1.50 |"
    paths = write_reports(runs, str(tmp_path))
    for key in ("plot", "plot:aime2024"):
        with open(paths[key], "rb") as f:
            assert f.read(8) == PNG_MAGIC


def test_compare_cli_merges_runs(tmp_path, capsys):
    for label, metrics in (("grpo", _metrics(0.2, 0.4)), ("resrl", _metrics(0.3, 0.6))):
        write_json({"benchmarks": {"amc2023": metrics}}, str(tmp_path / label / "results.json"))
    out = tmp_path / "cmp"
    assert compare_main([f"GRPO={tmp_path / 'grpo'}", f"ResRL={tmp_path / 'resrl'}", "--out", str(out)]) == 0
    merged = json.loads((out / "results.json").read_text())["runs"]
    assert merged["ResRL"]["amc2023"]["pass@2"] == 0.6
    assert "| ResRL | amc2023 | 30.0 | 30.0 | 60.0 | 1.50 |" in capsys.readouterr().out
    assert (out / "pass_at_k_amc2023.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(FileNotFoundError, match="not an eval output folder"):
        compare_main([f"X={tmp_path}", "--out", str(out)])
    with pytest.raises(SystemExit, match="given twice"):
        compare_main([f"A={tmp_path / 'grpo'}", f"A={tmp_path / 'resrl'}", "--out", str(out)])
