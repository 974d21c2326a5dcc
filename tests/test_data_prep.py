"""Data preparation on local fixture files in each source schema: schema, template, ground truth, deduplication."""

import json
import logging
import os

import pandas as pd
import pytest

from verl_resrl.data.__main__ import main as data_main
from verl_resrl.data.convert import convert_records, read_local_records, write_parquet
from verl_resrl.data.sources import BENCHMARKS, SOURCES
from verl_resrl.data.templates import math_prompt, problem_from_prompt

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")
FIXTURE_FILES = {
    "math_dapo": "dapo_math_17k.parquet",
    "math500": "math500.jsonl",
    "aime2024": "aime2024.jsonl",
    "aime2025": "aime2025.jsonl",
    "amc2023": "amc2023.parquet",
    "minerva_math": "minerva_math.jsonl",
    "olympiadbench": "olympiadbench.parquet",
}
# (problem, ground truth) per benchmark, read off the fixture files by hand
EXPECTED = {
    "math500": [
        ("Simplify $\\frac{28}{6}$.", "\\frac{14}{3}"),
        ("Convert $(0,3)$ to polar coordinates.", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("What is $\\sqrt{144}$?", "12"),
    ],
    "aime2024": [
        ("Find the remainder when $2^{10}$ is divided by $1000$.", "24"),
        ("How many integers $n$ with $1\\le n\\le 100$ are perfect squares?", "010"),
    ],
    "aime2025": [("Find $17\\cdot 3$.", "51"), ("Find $2^9$.", "512")],
    "amc2023": [("What is $1.5 \\times 18$?", "27"), ("What is $1 \\div 4$?", "0.25")],
    "minerva_math": [
        ("A star has parallax $0.1$ arcsec. Its distance in parsecs is?", "10"),
        ("Give the speed of light in m/s to one significant figure.", "3e8"),
    ],
    "olympiadbench": [
        ("Find all real $x$ with $x^2=4$.", "2, -2"),
        ("Let $a=2$ and $b=3$.\n\nCompute $a+b$.", "\\frac{5}{1}"),
    ],
}
TEMPLATE_TEXT = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)


def convert_fixture(name):
    return convert_records(SOURCES[name], read_local_records(os.path.join(FIXTURES, FIXTURE_FILES[name])))


def test_every_benchmark_of_the_paper_has_a_source_and_a_fixture():
    assert set(BENCHMARKS) == {"math500", "aime2024", "aime2025", "amc2023", "minerva_math", "olympiadbench"}
    assert set(FIXTURE_FILES) == set(SOURCES)


def test_template_is_dapos_answer_line_instruction():
    assert math_prompt("  What is 1+1?\n") == TEMPLATE_TEXT.format("What is 1+1?")
    assert problem_from_prompt(TEMPLATE_TEXT.format("Q")) == "Q"
    with pytest.raises(ValueError, match="template"):
        problem_from_prompt("Q")
    with pytest.raises(ValueError, match="non-empty"):
        math_prompt("  ")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_rows_schema_template_and_ground_truth(name, tmp_path):
    rows, stats = convert_fixture(name)
    assert stats["source_rows"] == stats["rows"] == len(EXPECTED[name]) and stats["duplicates_dropped"] == 0
    for index, (row, (problem, answer)) in enumerate(zip(rows, EXPECTED[name])):
        assert set(row) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
        assert row["data_source"] == name and row["ability"] == "math"
        assert row["prompt"] == [{"role": "user", "content": TEMPLATE_TEXT.format(problem)}]
        assert row["reward_model"] == {"style": "rule", "ground_truth": answer}
        assert row["extra_info"]["index"] == index and row["extra_info"]["split"] == "test"
        assert row["extra_info"]["original_dataset"] == SOURCES[name].hf_path
    # the parquet round trip keeps every field
    path = tmp_path / f"{name}.parquet"
    write_parquet(rows, str(path))
    back = pd.read_parquet(path)
    assert list(back.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert [r["ground_truth"] for r in back["reward_model"]] == [a for _, a in EXPECTED[name]]
    assert [p[0]["content"] for p in back["prompt"]] == [TEMPLATE_TEXT.format(q) for q, _ in EXPECTED[name]]


def test_benchmark_extra_columns_and_ids():
    rows, _ = convert_fixture("math500")
    assert rows[0]["extra_info"]["source_id"] == "test/prealgebra/1.json"
    assert rows[0]["extra_info"]["subject"] == "Prealgebra" and rows[0]["extra_info"]["level"] == "2"
    rows, _ = convert_fixture("olympiadbench")
    assert [r["extra_info"]["unit"] for r in rows] == ["", "cm"]
    assert rows[0]["extra_info"]["source_id"] == "1606"


def test_dapo_deduplication_keeps_first_occurrence_and_counts_repeats(caplog):
    source = read_local_records(os.path.join(FIXTURES, FIXTURE_FILES["math_dapo"]))
    with caplog.at_level(logging.WARNING):
        rows, stats = convert_records(SOURCES["math_dapo"], source)
    # 8 source rows over 4 problems (one repeat differs only in whitespace, one repeat disagrees on the answer)
    assert stats == {"source_rows": 8, "rows": 4, "duplicates_dropped": 4, "conflicting_duplicates": 1}
    assert "different ground truth" in caplog.text
    assert [r["extra_info"]["num_source_rows"] for r in rows] == [3, 2, 1, 2]
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["11", "9", "15", "7"]
    assert [r["extra_info"]["source_id"] for r in rows] == ["uuid-0000-0", "uuid-0001-1", "uuid-0002-3", "uuid-0003-4"]
    assert all(r["data_source"] == "math_dapo" and r["extra_info"]["split"] == "train" for r in rows)
    # DAPO already uses our template: a kept prompt is the source prompt, byte for byte
    source_texts = [s["prompt"][0]["content"] for s in source]
    first_source_prompt = {problem_from_prompt(text): text for text in source_texts[::-1]}
    for row in rows:
        assert row["prompt"][0]["content"] == first_source_prompt[problem_from_prompt(row["prompt"][0]["content"])]
    # every unique source problem survives
    unique = {" ".join(problem_from_prompt(s["prompt"][0]["content"]).split()) for s in source}
    assert {" ".join(problem_from_prompt(r["prompt"][0]["content"]).split()) for r in rows} == unique


def test_bad_source_rows_get_clear_errors():
    spec = SOURCES["math500"]
    with pytest.raises(KeyError, match="row 1: no non-empty answer"):
        convert_records(spec, [{"problem": "a", "answer": "1"}, {"problem": "b", "solution": "x"}])
    with pytest.raises(KeyError, match="row 0: no non-empty answer"):
        convert_records(spec, [{"problem": "a", "answer": float("nan")}])
    with pytest.raises(ValueError, match="row 0: answer is inf"):
        convert_records(spec, [{"problem": "a", "answer": float("inf")}])
    with pytest.raises(ValueError, match="template"):
        convert_records(SOURCES["math_dapo"], [{"prompt": [{"role": "user", "content": "bare"}],
                                                "reward_model": {"ground_truth": "1"}}])
    with pytest.raises(ValueError, match="no rows"):
        convert_records(spec, [])


def test_rows_load_in_verls_rl_dataset(tmp_path):
    """The consumer's view: verl's RLHFDataset reads our parquet and hands the chat prompt to the rollout."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    rows, _ = convert_fixture("aime2024")
    path = str(tmp_path / "aime2024.parquet")
    write_parquet(rows, path)
    config = OmegaConf.create({"filter_overlong_prompts": False, "cache_dir": str(tmp_path / "cache")})
    dataset = RLHFDataset(path, tokenizer=None, config=config)
    assert len(dataset) == 2
    item = dataset[1]
    assert item["raw_prompt"] == rows[1]["prompt"]
    assert item["reward_model"]["ground_truth"] == "010" and item["data_source"] == "aime2024"
    assert item["index"] == 1


def test_cli_prepares_from_local_sources(tmp_path, capsys):
    args = ["--out-dir", str(tmp_path), "--only", "amc2023", "math_dapo"]
    args += ["--source", f"amc2023={FIXTURES}/amc2023.parquet", f"math_dapo={FIXTURES}/dapo_math_17k.parquet"]
    assert data_main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [(s["dataset"], s["rows"]) for s in lines] == [("amc2023", 2), ("math_dapo", 4)]
    assert len(pd.read_parquet(tmp_path / "math_dapo.parquet")) == 4
    with pytest.raises(SystemExit, match="unknown dataset 'gsm8k'"):
        data_main(["--out-dir", str(tmp_path), "--source", "gsm8k=x.jsonl"])
