"""Reward of the tiny task, in verl's custom-reward-function signature.

Point verl at it with::

    reward.custom_reward_function.path=pkg://verl_resrl.tiny.reward   (or the file path of this module)
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.reward_convention=binary   # optional, default "signed"

verl's reward loop (``experimental/reward_loop/reward_manager/naive.py``) calls it with ``data_source``,
``solution_str``, ``ground_truth`` and ``extra_info`` and copies every key of the returned dict into
``reward_extra_info``; the key ``acc`` becomes verl's core validation metric ``val-core/<data_source>/acc/mean@N``
(``RayPPOTrainer._val_metrics_update``) and ``pred`` feeds its majority-vote metrics, as with verl's own
``math_dapo.compute_score``.
"""

from __future__ import annotations

from verl_resrl.rewards.math import score as math_score
from verl_resrl.rewards.math import warm_up

# absolute import: verl may load this module from its file path (custom_reward_function.path), outside the package
from verl_resrl.tiny.task import DATA_SOURCE, shows_work

# verl loads this module once per reward worker: the verifier's imports (~1-2 s) are paid here, not by a first score
warm_up()


def compute_score(data_source, solution_str, ground_truth, extra_info=None, reward_convention="signed", **kwargs):
    """Score one response with the project's math verifier (``Answer:`` line, DAPO convention).

    Returns ``{"score": reward, "acc": 1.0|0.0, "pred": extracted answer or None, "reason": verdict,
    "worked": 1.0|0.0}`` (``worked``: the response shows worked lines, logged as
    ``val-aux/resrl_tiny/arith/worked/mean@N``);
    ``reward_convention`` "signed" gives +1/-1 (DAPO, ResRL reference), "binary" 1/0 (NSR/W-REINFORCE).
    Other keyword arguments verl may pass (``reward_router_address``, ...) are accepted and unused.
    """
    if data_source != DATA_SOURCE:
        raise ValueError(
            f"verl_resrl.tiny.reward.compute_score scores data_source {DATA_SOURCE!r} only, got {data_source!r}"
        )
    result = math_score(solution_str, ground_truth, reward_convention=reward_convention)
    return {
        "score": result["score"],
        "acc": 1.0 if result["reason"] == "correct" else 0.0,
        "pred": result["answer"],
        "reason": result["reason"],
        "worked": 1.0 if shows_work(solution_str) else 0.0,
    }


def is_correct(response: str, ground_truth: str) -> bool:
    """Exact-answer correctness as the RL reward sees it (used by the warm-start evaluation)."""
    return compute_score(DATA_SOURCE, response, ground_truth)["acc"] == 1.0
