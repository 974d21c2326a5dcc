"""The calculator behind ``CalcTool`` (tools.py), free of verl imports so the warm start and its evaluation use it
without loading verl.

A chain of integer operations (``"7+5-9+3"``), evaluated left to right like the task's problems, parsed by a regular
expression: no ``eval``, no Python grammar, bounded operand sizes, count and length, so a hostile expression can
neither run code nor build a huge number.
"""

from __future__ import annotations

import re
from typing import Any

from verl_resrl.tiny_tools.task import TOOL_ARG

MAX_DIGITS = 6  # operands up to 999999: the task's numbers are below 40, the bound only limits hostile inputs
MAX_EXPR_CHARS = 32
MAX_OPERATIONS = 8  # the task's chains have at most 3; the bound only limits hostile inputs
_NUMBER = rf"-?\d{{1,{MAX_DIGITS}}}"
_EXPR = re.compile(rf"\s*{_NUMBER}(\s*[-+*/]\s*{_NUMBER}){{1,{MAX_OPERATIONS}}}\s*")
_STEP = re.compile(rf"\s*([-+*/])\s*({_NUMBER})")


class CalcError(ValueError):
    """The expression is not an integer chain the calculator accepts."""


def evaluate(expr: Any) -> int:
    """The value of ``"a op b op c ..."`` left to right (op one of ``+ - * /``, integers; ``/`` only when exact)."""
    if not isinstance(expr, str):
        raise CalcError(f"expr must be a string, got {type(expr).__name__}")
    if len(expr) > MAX_EXPR_CHARS:
        raise CalcError(f"expr longer than {MAX_EXPR_CHARS} characters")
    if _EXPR.fullmatch(expr) is None:
        raise CalcError(f"expected integers joined by + - * / (at most {MAX_OPERATIONS} operations, left to right) "
                        f"such as 7+5-9, got {expr!r}")
    first = re.match(rf"\s*({_NUMBER})", expr)
    total = int(first.group(1))
    for op, text in _STEP.findall(expr, first.end()):
        total = _apply(total, op, int(text))
    return total


def _apply(a: int, op: str, b: int) -> int:
    """One operation; ``/`` only when exact."""
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
