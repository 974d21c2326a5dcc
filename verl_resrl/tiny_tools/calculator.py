"""The calculator behind ``CalcTool`` (tools.py), free of verl imports so the warm start and its evaluation use it
without loading verl.

ONE binary operation of two integers (``"12-9"``), parsed by a regular expression: no ``eval``, no Python grammar,
bounded operand sizes and length, so a hostile expression can neither run code nor build a huge number.
"""

from __future__ import annotations

import re
from typing import Any

from verl_resrl.tiny_tools.task import TOOL_ARG

MAX_DIGITS = 6  # operands up to 999999: the task's numbers are below 40, the bound only limits hostile inputs
MAX_EXPR_CHARS = 32
_EXPR = re.compile(rf"\s*(-?\d{{1,{MAX_DIGITS}}})\s*([-+*/])\s*(-?\d{{1,{MAX_DIGITS}}})\s*")


class CalcError(ValueError):
    """The expression is not one integer operation the calculator accepts."""


def evaluate(expr: Any) -> int:
    """The value of ``"a op b"`` (op one of ``+ - * /``, integers; ``/`` only when exact)."""
    if not isinstance(expr, str):
        raise CalcError(f"expr must be a string, got {type(expr).__name__}")
    if len(expr) > MAX_EXPR_CHARS:
        raise CalcError(f"expr longer than {MAX_EXPR_CHARS} characters")
    match = _EXPR.fullmatch(expr)
    if match is None:
        raise CalcError(f"expected one operation of two integers such as 7+5, got {expr!r}")
    a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0 or a % b:
        raise CalcError(f"{a}/{b} is not an exact integer division")
    return a // b


def calc_response(arguments: Any) -> tuple[str, bool]:
    """(tool message text, whether it is a result) for the call's ``arguments`` dict."""
    if not isinstance(arguments, dict) or set(arguments) != {TOOL_ARG}:
        keys = sorted(arguments) if isinstance(arguments, dict) else type(arguments).__name__
        return f"error: calc takes exactly one argument '{TOOL_ARG}', got {keys}", False
    try:
        return str(evaluate(arguments[TOOL_ARG])), True
    except CalcError as err:
        return f"error: {err}", False
