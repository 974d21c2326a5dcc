"""The one prompt template of our math recipes (training and evaluation): DAPO's ``Answer:`` instruction.

Source: the prompts of DAPO-Math-17k (BytedTsinghua-SIA/DAPO-Math-17k, arXiv 2503.14476), which the ResRL reference
recipe trains on unchanged, and which verl's ``utils/reward_score/math_dapo.py`` scores (it reads the last
``Answer:`` line). Every benchmark is rendered with the same text so that train and test prompts match and one
verifier (``verl_resrl.rewards.math``) reads every response. The rendered user message is::

    Solve the following math problem step by step. The last line of your response should be of the form
    Answer: $Answer (without quotes) where $Answer is the answer to the problem.

    {problem}

    Remember to put your answer on its own line after "Answer:".

(the first two lines are one line in the prompt). ``$Answer`` is literal text of the instruction, not a template
variable. The model's chat template (applied by verl's dataset or the eval CLI) wraps this single user turn.
"""

from __future__ import annotations

MATH_PROMPT_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
MATH_PROMPT_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


def math_prompt(problem: str) -> str:
    """The user message for ``problem`` (surrounding whitespace of the problem is stripped)."""
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"problem must be a non-empty string, got {problem!r}")
    return MATH_PROMPT_PREFIX + problem.strip() + MATH_PROMPT_SUFFIX


def math_chat_prompt(problem: str) -> list[dict[str, str]]:
    """verl's ``prompt`` column: one user turn holding :func:`math_prompt` (no system prompt, as in DAPO)."""
    return [{"role": "user", "content": math_prompt(problem)}]


def problem_from_prompt(content: str) -> str:
    """Inverse of :func:`math_prompt`: the bare problem of a DAPO-templated message; ValueError if not templated."""
    if not (content.startswith(MATH_PROMPT_PREFIX) and content.endswith(MATH_PROMPT_SUFFIX)):
        raise ValueError(f"message does not carry the DAPO math template: {content[:80]!r}...")
    problem = content[len(MATH_PROMPT_PREFIX) : len(content) - len(MATH_PROMPT_SUFFIX)].strip()
    if not problem:
        raise ValueError("templated message holds an empty problem")
    return problem
