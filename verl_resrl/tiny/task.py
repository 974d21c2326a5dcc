"""The verifiable synthetic task ``resrl_tiny/arith``: short chains of integer additions and subtractions.

A problem is ``Compute 7+5-9+3.``; its worked response writes one running sum per line and ends with a DAPO-style
``Answer: <integer>`` line (the format of DAPO-Math-17k and of verl's ``math_dapo`` scorer, so the same verifier serves
the tiny task and the reference math recipe)::

    7+5=12
    12-9=3
    3+3=6
    Answer: 6

The warm start also shows the model direct responses (``Answer: 6`` alone) for part of its examples; see warmstart.py.

Everything is generated locally from one seeded stream (no download), in this order: ``val`` (distinct problems),
``train`` (the RL prompts: distinct, none of them in ``val``) and ``sft`` (the warm-start examples: i.i.d. draws that
are not in ``val``; they may repeat and may coincide with RL prompts, as in the usual SFT-then-RL pipeline). No
validation problem is ever trained on. The splits follow one distribution, except that ``val`` is held out and that a
family with few members runs out in ``train``: with the defaults there are only 155 two-term problems, about 40 go to
``val`` and the rest to ``train``, where they are then ~11% of the prompts instead of a third.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

DATA_SOURCE = "resrl_tiny/arith"
ABILITY = "math"


@dataclass(frozen=True)
class ArithTaskConfig:
    """Settings of the generator. Difficulty was chosen so that a ~1M-parameter model learns it partly in about a
    minute of supervised training on 2 cores (see docs/tiny_task.md for the measured accuracies)."""

    seed: int = 0  # one RNG stream for all splits, so splits are disjoint and reproducible
    num_val: int = 128  # validation prompts (greedy and sampled accuracy are measured on them)
    num_train: int = 1024  # RL prompts
    num_sft: int = 8000  # warm-start examples (a step draws a batch from them)
    # mixed difficulty: the warm start's greedy accuracy falls with the terms (build fact greedy_accuracy_by_terms)
    min_terms: int = 2  # operands per problem
    max_terms: int = 4
    max_operand: int = 9  # operands are single digits drawn from [0, max_operand]; running sums reach 36
    # running sums never go below zero: a subtraction that would, becomes an addition (keeps answers natural numbers)
    nonnegative: bool = True

    def __post_init__(self):
        for name in ("num_val", "num_train", "num_sft"):
            if getattr(self, name) < 0:
                raise ValueError(f"ArithTaskConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 2 <= self.min_terms <= self.max_terms:
            raise ValueError(
                f"ArithTaskConfig needs 2 <= min_terms <= max_terms, got min_terms={self.min_terms}, "
                f"max_terms={self.max_terms}"
            )
        if self.max_operand < 1:
            raise ValueError(f"ArithTaskConfig.max_operand must be >= 1, got {self.max_operand}")


@dataclass(frozen=True)
class ArithProblem:
    """One problem: ``operands[0] ops[0] operands[1] ...`` evaluated left to right."""

    operands: tuple[int, ...]
    ops: tuple[str, ...]  # "+" or "-", one fewer than operands

    @property
    def expression(self) -> str:
        parts = [str(self.operands[0])]
        for op, value in zip(self.ops, self.operands[1:]):
            parts.append(f"{op}{value}")
        return "".join(parts)

    @property
    def answer(self) -> int:
        return self.running_sums()[-1]

    def running_sums(self) -> list[int]:
        """The value after each operation, left to right."""
        total, sums = self.operands[0], []
        for op, value in zip(self.ops, self.operands[1:]):
            total = total + value if op == "+" else total - value
            sums.append(total)
        return sums

    def question(self) -> str:
        return f"Compute {self.expression}."

    def direct_solution(self) -> str:
        """The response without working: just ``Answer: <integer>`` (a warm-start style, see warmstart.py)."""
        return f"Answer: {self.answer}"

    def solution(self) -> str:
        """The worked response: one ``a op b=c`` line per step, then ``Answer: <integer>``."""
        lines, left = [], self.operands[0]
        for op, value, total in zip(self.ops, self.operands[1:], self.running_sums()):
            lines.append(f"{left}{op}{value}={total}")
            left = total
        lines.append(f"Answer: {self.answer}")
        return "\n".join(lines)


def sample_problem(rng: random.Random, cfg: ArithTaskConfig) -> ArithProblem:
    """Draw one problem from ``rng``."""
    num_terms = rng.randint(cfg.min_terms, cfg.max_terms)
    operands = [rng.randint(0, cfg.max_operand) for _ in range(num_terms)]
    ops, total = [], operands[0]
    for value in operands[1:]:
        op = rng.choice("+-")
        if cfg.nonnegative and op == "-" and total - value < 0:
            op = "+"
        total = total + value if op == "+" else total - value
        ops.append(op)
    return ArithProblem(tuple(operands), tuple(ops))


def generate_splits(cfg: ArithTaskConfig) -> dict[str, list[ArithProblem]]:
    """``val``, ``train`` and ``sft`` problems from one seeded stream (see the module docstring for the rules)."""
    rng = random.Random(cfg.seed)
    val = _draw(rng, cfg, cfg.num_val, exclude=set(), unique=True)
    held_out = {_key(p) for p in val}
    train = _draw(rng, cfg, cfg.num_train, exclude=held_out, unique=True)
    sft = _draw(rng, cfg, cfg.num_sft, exclude=held_out, unique=False)
    return {"val": val, "train": train, "sft": sft}


def _key(problem: ArithProblem) -> tuple:
    return problem.operands, problem.ops


def _draw(rng: random.Random, cfg: ArithTaskConfig, count: int, *, exclude: set, unique: bool) -> list[ArithProblem]:
    """``count`` problems not in ``exclude`` (and pairwise distinct if ``unique``); an error if the space is too small."""
    seen, problems, attempts = set(exclude), [], 0
    while len(problems) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(
                f"ArithTaskConfig allows too few distinct problems for {count} more "
                f"(max_operand={cfg.max_operand}, terms {cfg.min_terms}..{cfg.max_terms}): raise max_operand or lower "
                f"num_val/num_train"
            )
        problem = sample_problem(rng, cfg)
        if _key(problem) in seen:
            continue
        if unique:
            seen.add(_key(problem))
        problems.append(problem)
    return problems


_WORKED_LINE = re.compile(r"-?\d+[+-]\d+=-?\d+")


def shows_work(response: str) -> bool:
    """Whether ``response`` has at least one worked ``a op b=c`` line (the worked style, right or wrong)."""
    return any(_WORKED_LINE.fullmatch(line.strip()) for line in response.splitlines())


def prompt_messages(problem: ArithProblem) -> list[dict[str, str]]:
    """The chat prompt verl's dataset and agent loop render with the tokenizer's chat template."""
    return [{"role": "user", "content": problem.question()}]


def verl_record(problem: ArithProblem, split: str, index: int) -> dict:
    """One row in verl's RL parquet format (``RLHFDataset``; reward from ``reward_model.ground_truth``)."""
    return {
        "data_source": DATA_SOURCE,
        "prompt": prompt_messages(problem),
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": str(problem.answer)},
        "extra_info": {
            "split": split,
            "index": index,
            "expression": problem.expression,
            "num_terms": len(problem.operands),
            "solution": problem.solution(),
        },
    }


def write_parquet(problems: list[ArithProblem], split: str, path: str) -> None:
    """Write ``problems`` as a verl parquet file at ``path``."""
    import pandas as pd

    rows = [verl_record(problem, split, index) for index, problem in enumerate(problems)]
    pd.DataFrame(rows).to_parquet(path, index=False)
