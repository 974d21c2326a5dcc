"""Reward of the tiny tool task, in verl's custom-reward-function signature (as ``verl_resrl.tiny.reward``).

    reward.custom_reward_function.path=pkg://verl_resrl.tiny_tools.reward
    reward.custom_reward_function.name=compute_score

verl's reward loop decodes the WHOLE response, tool turns included (special tokens skipped), so ``solution_str`` is
``<tool_call>...</tool_call>\\ntool\\n12\\nassistant\\n...Answer: 6``; the math verifier reads the last ``Answer:``
line, which only the model writes (the calculator returns a number or an ``error:`` line). Besides the tiny reward's
keys it returns ``tool_calls`` (``<tool_call>`` blocks the model wrote) and ``used_tool`` (1.0 / 0.0), which verl logs
at validation as ``val-aux/resrl_tiny_tools/arith/{tool_calls,used_tool}/mean@N``.
"""

from __future__ import annotations

from verl_resrl.rewards.math import score as math_score
from verl_resrl.rewards.math import warm_up

# absolute import: verl may load this module from its file path (custom_reward_function.path), outside the package
from verl_resrl.tiny_tools.task import DATA_SOURCE, count_tool_calls

warm_up()  # the verifier's imports are paid when verl loads this module, not by a first score


def compute_score(data_source, solution_str, ground_truth, extra_info=None, reward_convention="signed", **kwargs):
    """``{"score", "acc", "pred", "reason", "tool_calls", "used_tool"}`` for one multi-turn response."""
    if data_source != DATA_SOURCE:
        raise ValueError(
            f"verl_resrl.tiny_tools.reward.compute_score scores data_source {DATA_SOURCE!r} only, got {data_source!r}"
        )
    result = math_score(solution_str, ground_truth, reward_convention=reward_convention)
    calls = count_tool_calls(solution_str)
    return {
        "score": result["score"],
        "acc": 1.0 if result["reason"] == "correct" else 0.0,
        "pred": result["answer"],
        "reason": result["reason"],
        "tool_calls": float(calls),
        "used_tool": 1.0 if calls else 0.0,
    }


def is_correct(response: str, ground_truth: str) -> bool:
    """Exact-answer correctness as the RL reward sees it (the warm-start evaluation uses it)."""
    return compute_score(DATA_SOURCE, response, ground_truth)["acc"] == 1.0
