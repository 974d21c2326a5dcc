"""Which verifier scores a benchmark, and the per-row tools of a function-calling (BFCL) benchmark.

A benchmark is scored as function calls when its rows are BFCL rows (``python -m verl_resrl.data --only bfcl_*``):
``data_source`` starting with ``bfcl``, or ``extra_info.verifier == "function_call"`` -- the routing of the training
reward manager (``verl_resrl.rewards.reward_manager.choose_verifier``), repeated here so that the eval CLI does not
import verl. Multi-turn BFCL rows (``bfcl_multi_turn*``, verifier ``function_call_multi_turn``) are refused: the CLI
samples one response per prompt, and such a row needs the model's calls executed between its turns. Every other
benchmark is scored as math, exactly as before this module existed (code benchmarks too: the eval CLI has never
scored code).

Each function-call row carries two tool lists (docs/function_calling.md, "Data"): the ``tools`` column, OpenAI
style, rendered by the chat template, and ``extra_info.tools``, BFCL's own docs, which the verifier checks calls
against (it keeps BFCL's ``any`` type). A row without ``extra_info.tools`` is checked against its ``tools`` column.
"""

from __future__ import annotations

import json

MATH = "math"
FUNCTION_CALL = "function_call"
MULTI_TURN = "function_call_multi_turn"


def row_verifier(data_source, extra_info) -> str:
    """``function_call`` for a single-turn BFCL row, ``function_call_multi_turn`` for a multi-turn one, else
    ``math``."""
    chosen = (extra_info or {}).get("verifier")
    source = str(data_source or "").lower()
    if chosen == MULTI_TURN or (chosen is None and source.startswith("bfcl_multi_turn")):
        return MULTI_TURN
    if chosen == FUNCTION_CALL or (chosen is None and source.startswith("bfcl")):
        return FUNCTION_CALL
    return MATH


def benchmark_verifier(path: str, sources: list, infos: list) -> str:
    """The one verifier kind of a benchmark file's rows; a file mixing BFCL and other rows is refused, and so are
    multi-turn rows (the eval CLI samples one response per prompt; they need the calls run between turns)."""
    kinds = {row_verifier(s, i) for s, i in zip(sources, infos)}
    if MULTI_TURN in kinds:
        raise ValueError(f"{path}: multi-turn BFCL rows are not supported by the eval CLI (it samples one response "
                         "per prompt; a multi-turn row needs the model's calls executed between its turns)")
    if len(kinds) > 1:
        rows = [r for r, (s, i) in enumerate(zip(sources, infos)) if row_verifier(s, i) == FUNCTION_CALL][:3]
        raise ValueError(f"{path}: mixes function-call (BFCL) rows, e.g. rows {rows}, with other rows; "
                         "give each kind its own benchmark file")
    return kinds.pop() if kinds else MATH


def parse_tool_list(value, where: str) -> list[dict]:
    """A non-empty list of tool objects from a JSON string or a list (numpy arrays already converted)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise ValueError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(value, list) or not value or not all(isinstance(tool, dict) for tool in value):
        raise ValueError(f"{where}: must be a non-empty list of tool objects, got {str(value)[:80]!r}")
    return value


def read_tools(path: str, tools_column: list | None, infos: list) -> tuple[list[list[dict]], list]:
    """Per row: the chat template's tools (``tools`` column) and the verifier's tools (``extra_info.tools``)."""
    if tools_column is None:
        raise KeyError(f"{path}: missing column 'tools' (a BFCL benchmark renders each row's tools in the chat "
                       "template; `python -m verl_resrl.data --only bfcl_*` writes it)")
    template, verifier = [], []
    for row, (tools, info) in enumerate(zip(tools_column, infos)):
        template.append(parse_tool_list(tools, f"{path} row {row}: tools"))
        docs = (info or {}).get("tools")
        verifier.append(template[-1] if docs is None else parse_tool_list(docs, f"{path} row {row}: extra_info.tools"))
    return template, verifier
