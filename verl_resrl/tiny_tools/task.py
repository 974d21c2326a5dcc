"""The tool task ``resrl_tiny_tools/arith``: the chains of ``verl_resrl.tiny.task`` computed with a calculator tool.

The prompt is the tiny task's (``Compute 7+5-9+3.``). In the tool style the model sends the chain to the calculator
in one Hermes tool call, reads the result from the tool message in its next turn, and ends with the DAPO answer
line::

    assistant: <tool_call>{"name": "calc", "arguments": {"expr": "7+5-9+3"}}</tool_call>
    tool:      6
    assistant: Answer: 6

In the direct style it answers at once (``Answer: 6``). The warm start shows both styles (warmstart.py); the tool
style is right far more often, because the model only copies the chain and the result and the tool computes, so RL
has one shared behaviour to select (as the worked style of the tiny task; docs/tiny_tools.md).

The splits are the tiny task's (same generator and seed): no validation problem is ever trained on.
"""

from __future__ import annotations

import json
import re

from verl_resrl.tiny.task import ArithProblem, ArithTaskConfig, generate_splits, prompt_messages

DATA_SOURCE = "resrl_tiny_tools/arith"
ABILITY = "math"
AGENT_NAME = "tool_agent"  # verl's ToolAgentLoop (experimental/agent_loop/tool_agent_loop.py), per row
TOOL_NAME = "calc"
TOOL_ARG = "expr"
# verl's Hermes parser (experimental/agent_loop/tool_parser.py) uses the same pattern
TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)

__all__ = ["ArithProblem", "ArithTaskConfig", "generate_splits", "prompt_messages"]


def tool_call_json(expr: str) -> str:
    """The call object as the model writes it: ``json.dumps`` defaults, as the chat template's ``tojson``."""
    return json.dumps({"name": TOOL_NAME, "arguments": {TOOL_ARG: expr}})


def tool_call_text(expr: str) -> str:
    """One Hermes tool call: ``<tool_call>{"name": "calc", "arguments": {"expr": "7+5"}}</tool_call>``."""
    return f"<tool_call>{tool_call_json(expr)}</tool_call>"


def calls(problem: ArithProblem) -> list[tuple[str, int]]:
    """The tool style's calls as (expression, result): ONE call with the whole chain, copied from the prompt.

    One call per operation was tried first: the tiny model then has to find the next operand in the prompt ~60 tokens
    back after each call's JSON, and after 500 warm-start steps it copied nearly every operand wrong (tool-style
    samples right 3.6% of the time, below the direct style's 7.6%; docs/tiny_tools.md). Copying one contiguous span
    is what a small transformer learns quickly, and the answer is then the tool message just before it.
    """
    return [(problem.expression, problem.answer)]


def turns(problem: ArithProblem, use_tool: bool) -> list[tuple[str, str | None]]:
    """The gold transcript as (assistant text, tool output or None for the last turn) pairs."""
    made = [(tool_call_text(expr), str(result)) for expr, result in calls(problem)] if use_tool else []
    return made + [(problem.direct_solution(), None)]


def transcript_messages(problem: ArithProblem, use_tool: bool) -> list[dict]:
    """The whole conversation as chat messages, tool calls in verl's assistant-message layout.

    ``ToolAgentLoop._build_assistant_message`` stores a parsed call as ``{"type": "function", "function": {"name",
    "arguments": dict}}`` with the call text removed from ``content``; the tool message has the result as content.
    """
    messages = list(prompt_messages(problem))
    for text, output in turns(problem, use_tool):
        if output is None:
            messages.append({"role": "assistant", "content": text})
            continue
        call = json.loads(TOOL_CALL_RE.fullmatch(text).group(1))
        messages.append({"role": "assistant", "content": "",
                         "tool_calls": [{"type": "function", "function": call}]})
        messages.append({"role": "tool", "content": output})
    return messages


def parse_tool_calls(text: str) -> list[tuple[str, dict]]:
    """(name, arguments) of every well-formed ``<tool_call>`` block, as verl's Hermes parser reads them."""
    calls = []
    for body in TOOL_CALL_RE.findall(text):
        try:
            obj = json.loads(body)
            name, arguments = obj["name"], obj["arguments"]
        except (ValueError, KeyError, TypeError):
            continue  # verl logs and skips a block it cannot decode
        calls.append((name, arguments))
    return calls


def count_tool_calls(response: str) -> int:
    """``<tool_call>`` blocks the model wrote in ``response`` (well-formed or not)."""
    return len(TOOL_CALL_RE.findall(response))


def verl_record(problem: ArithProblem, split: str, index: int) -> dict:
    """One parquet row for verl's ``RLHFDataset``; ``agent_name`` routes it to the tool agent loop."""
    return {
        "data_source": DATA_SOURCE,
        "prompt": prompt_messages(problem),
        "ability": ABILITY,
        "agent_name": AGENT_NAME,
        "reward_model": {"style": "rule", "ground_truth": str(problem.answer)},
        "extra_info": {
            "split": split,
            "index": index,
            "expression": problem.expression,
            "num_terms": len(problem.operands),
            "num_tool_calls": len(calls(problem)),  # of the gold tool-style transcript
        },
    }


def write_parquet(problems: list[ArithProblem], split: str, path: str) -> None:
    """Write ``problems`` as a verl parquet file at ``path``."""
    import pandas as pd

    rows = [verl_record(problem, split, index) for index, problem in enumerate(problems)]
    pd.DataFrame(rows).to_parquet(path, index=False)
