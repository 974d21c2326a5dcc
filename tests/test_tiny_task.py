"""The synthetic arithmetic task: determinism, answers checked independently, verl parquet schema, reward."""

import re

import pandas as pd
import pytest

from verl_resrl.tiny import task
from verl_resrl.tiny.reward import compute_score

SMALL = task.ArithTaskConfig(seed=3, num_val=40, num_train=120, num_sft=300, max_terms=4)


def left_to_right(expression: str) -> int:
    """Reference evaluation of an ``a+b-c`` string, written independently of the generator."""
    tokens = re.findall(r"[+-]|\d+", expression)
    assert "".join(tokens) == expression, expression
    value = int(tokens[0])
    for op, number in zip(tokens[1::2], tokens[2::2]):
        value = value + int(number) if op == "+" else value - int(number)
    return value


def test_same_seed_same_problems_other_seed_other_problems():
    first, again = task.generate_splits(SMALL), task.generate_splits(SMALL)
    assert first == again
    other = task.generate_splits(task.ArithTaskConfig(**{**SMALL.__dict__, "seed": 4}))
    assert other["train"] != first["train"]


def test_split_sizes_distinct_prompts_and_held_out_validation():
    splits = task.generate_splits(SMALL)
    assert [len(splits[s]) for s in ("val", "train", "sft")] == [40, 120, 300]
    val, train, sft = ({p.expression for p in splits[s]} for s in ("val", "train", "sft"))
    assert len(val) == 40 and len(train) == 120  # validation and RL prompts are distinct problems
    assert not val & (train | sft)  # no validation problem is trained on, by SFT or RL
    assert len(sft) < 300  # SFT examples are i.i.d. draws: with at most 4 single digits, some repeat


def test_problems_respect_the_config_and_answers_are_right():
    for problem in (p for s in task.generate_splits(SMALL).values() for p in s):
        assert SMALL.min_terms <= len(problem.operands) <= SMALL.max_terms
        assert all(0 <= x <= SMALL.max_operand for x in problem.operands)
        assert problem.answer == left_to_right(problem.expression)
        assert problem.question() == f"Compute {problem.expression}."
        lines = problem.solution().split("\n")
        assert lines[-1] == f"Answer: {left_to_right(problem.expression)}"
        # every worked line is a true equation, and chains from the previous result
        previous = str(problem.operands[0])
        for line in lines[:-1]:
            lhs, rhs = line.split("=")
            assert lhs.startswith(previous) and left_to_right(lhs) == int(rhs) >= 0
            previous = rhs
        assert len(lines) == len(problem.operands)


def test_direct_solution_is_the_answer_line_alone():
    for problem in task.generate_splits(SMALL)["val"]:
        assert problem.direct_solution() == problem.solution().split("\n")[-1]
        assert task.shows_work(problem.solution()) and not task.shows_work(problem.direct_solution())


@pytest.mark.parametrize(
    "response, worked",
    [
        ("3+4=7\nAnswer: 7", True),
        ("3+4=8\nAnswer: 8", True),  # wrong working is still working
        (" 12-9=3 \nAnswer: 3", True),
        ("Answer: 7", False),
        ("3+4\nAnswer: 7", False),  # no equation
        ("x=7\nAnswer: 7", False),
        ("", False),
    ],
)
def test_shows_work_and_the_reward_report_it(response, worked):
    assert task.shows_work(response) is worked
    assert compute_score("resrl_tiny/arith", response, "7")["worked"] == (1.0 if worked else 0.0)


def test_verl_parquet_schema(tmp_path):
    problems = task.generate_splits(SMALL)["val"]
    path = tmp_path / "val.parquet"
    task.write_parquet(problems, "val", str(path))
    frame = pd.read_parquet(path)
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert len(frame) == len(problems)
    for index, row in frame.iterrows():
        assert row["data_source"] == "resrl_tiny/arith"
        assert row["ability"] == "math"
        messages = [dict(m) for m in row["prompt"]]
        assert messages == [{"role": "user", "content": f"Compute {row['extra_info']['expression']}."}]
        assert row["reward_model"]["style"] == "rule"
        truth = row["reward_model"]["ground_truth"]
        assert isinstance(truth, str) and int(truth) == left_to_right(row["extra_info"]["expression"])
        assert row["extra_info"]["split"] == "val" and row["extra_info"]["index"] == index


def test_verl_rl_dataset_reads_the_parquet(tmp_path):
    """verl's own dataset class tokenizes the prompts with the tiny tokenizer's chat template."""
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from verl_resrl.tiny.tokenizer import save_tokenizer

    task.write_parquet(task.generate_splits(SMALL)["val"][:5], "val", str(tmp_path / "val.parquet"))
    save_tokenizer(str(tmp_path / "tok"))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 64, "filter_overlong_prompts": True})
    dataset = RLHFDataset(str(tmp_path / "val.parquet"), tokenizer, config)
    assert len(dataset) == 5
    item = dataset[0]
    assert item["data_source"] == "resrl_tiny/arith"
    assert [dict(m) for m in item["raw_prompt"]][0]["content"].startswith("Compute ")


@pytest.mark.parametrize(
    "response, truth, signed, binary, pred",
    [
        ("3+4=7\nAnswer: 7", "7", 1.0, 1.0, "7"),
        ("3+4=8\nAnswer: 8", "7", -1.0, 0.0, "8"),
        ("3+4=7", "7", -1.0, 0.0, None),  # no Answer line: wrong, whatever the working says
    ],
)
def test_reward_conventions(response, truth, signed, binary, pred):
    result = compute_score("resrl_tiny/arith", response, truth, extra_info={"index": 0})
    assert (result["score"], result["acc"], result["pred"]) == (signed, 1.0 if signed > 0 else 0.0, pred)
    assert compute_score("resrl_tiny/arith", response, truth, reward_convention="binary")["score"] == binary


def test_reward_refuses_other_data_sources_and_conventions():
    with pytest.raises(ValueError, match="openai/gsm8k"):
        compute_score("openai/gsm8k", "Answer: 1", "1")
    with pytest.raises(ValueError, match="reward_convention"):
        compute_score("resrl_tiny/arith", "Answer: 1", "1", reward_convention="ternary")


@pytest.mark.parametrize(
    "field, value", [("num_train", -1), ("min_terms", 1), ("max_terms", 1), ("max_operand", 0)]
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        task.ArithTaskConfig(**{field: value})


def test_too_small_a_problem_space_is_an_error_not_a_hang():
    with pytest.raises(ValueError, match="max_operand"):
        task.generate_splits(task.ArithTaskConfig(max_operand=1, max_terms=2, num_train=50, num_sft=0, num_val=0))
