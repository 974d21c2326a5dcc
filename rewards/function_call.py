"""Function-call verifier: BFCL-style AST checking of a response's calls against a possible-answer list.

Public API (stable; the pool and the reward manager call it)::

    score(response, ground_truth, tools=None, **options) -> {"score": float, "answer": str | None, "reason": str}
    check(response, ground_truth, tools=None, **options) -> Verdict   # the same, with the rule that decided

``ground_truth`` is BFCL's possible answer (a list, or its JSON): one ``{function_name: {param: [allowed values]}}``
per expected call; ``""`` among the allowed values means the parameter may be left out. ``tools`` are the function
schemas (BFCL's ``{"name", "description", "parameters"}`` docs or OpenAI-style ``{"type": "function", "function":
{...}}``, or their JSON); without them only the possible answer is checked. Reasons: ``correct``, ``wrong``,
``no_answer``, ``parse_error`` (the pool adds ``timeout`` and ``crash``). Rules: docs/function_calling.md.
"""

from __future__ import annotations

import dataclasses
import json
import re

from verl_resrl.rewards.function_call_parse import Call, CallParseError, parse_calls
from verl_resrl.rewards.function_call_schema import (
    ParamSchema,
    check_type,
    parse_ground_truth,
    parse_tools,
)

REASONS = ("correct", "wrong", "no_answer", "parse_error")
# BFCL compares strings case-insensitively, ignoring whitespace and a few punctuation marks (its blog's "string
# standardization"); these are the marks we drop. Single quotes are read as double quotes.
_IGNORED_IN_STRINGS = re.compile(r"[\s,./\-_*^]")


@dataclasses.dataclass
class FunctionCallOptions:
    """Options of ``score``; unknown keys are an error naming the key."""

    # "signed": +1 correct / -1 otherwise (DAPO convention); "binary": 1 / 0.
    reward_convention: str = "signed"
    # Longer responses are refused unread (parse_error): bounds the work a hostile response can cause.
    max_response_chars: int = 200_000
    # Deeper bracket nesting is refused before any parser runs (json/ast recurse in C).
    max_depth: int = 32
    # Accept ``a_b`` for a function named ``a.b`` (APIs that forbid dots in tool names; BFCL's FC handlers do this).
    underscore_for_dot: bool = False

    def __post_init__(self):
        if self.reward_convention not in ("signed", "binary"):
            raise ValueError(f"reward_convention must be 'signed' or 'binary', got {self.reward_convention!r}")
        for key in ("max_response_chars", "max_depth"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive int, got {value!r}")

    @property
    def negative_reward(self) -> float:
        """Reward of every outcome except ``correct``."""
        return -1.0 if self.reward_convention == "signed" else 0.0


def parse_options(options: dict) -> FunctionCallOptions:
    """Build options from keyword arguments, naming any unknown key."""
    known = {f.name for f in dataclasses.fields(FunctionCallOptions)}
    for key in options:
        if key not in known:
            raise TypeError(f"function_call.score: unknown option {key!r}; known options: {sorted(known)}")
    return FunctionCallOptions(**options)


@dataclasses.dataclass
class Verdict:
    """The outcome of one check: the reason, the rule that decided it, and the calls read from the response."""

    reason: str
    detail: str
    calls: list[Call] | None = None


def standardize(text: str) -> str:
    """A string as BFCL compares it: lower case, whitespace and ``, . / - _ * ^`` removed, ' read as "."""
    return _IGNORED_IN_STRINGS.sub("", text.lower()).replace("'", '"')


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def values_match(given, allowed) -> bool:
    """Whether ``given`` equals one allowed value: strings standardized, int == float, lists in order, dicts by key."""
    if isinstance(allowed, str):
        return isinstance(given, str) and standardize(given) == standardize(allowed)
    if isinstance(allowed, bool) or isinstance(given, bool):
        return isinstance(given, bool) and isinstance(allowed, bool) and given == allowed
    if _is_number(allowed):
        return _is_number(given) and given == allowed
    if isinstance(allowed, list):
        return isinstance(given, list) and len(given) == len(allowed) and all(
            values_match(g, a) for g, a in zip(given, allowed)
        )
    if isinstance(allowed, dict):  # a nested possible answer: key -> list of allowed values
        return isinstance(given, dict) and dict_matches(given, allowed) is None
    return given == allowed and type(given) is type(allowed)


def dict_matches(given: dict, allowed: dict) -> str | None:
    """None when a dict argument matches a nested possible answer, else why not."""
    for key in given:
        if key not in allowed:
            return f"key {key!r} not in the possible answer"
    for key, options in allowed.items():
        options = options if isinstance(options, list) else [options]
        if key not in given:
            if "" not in options:
                return f"key {key!r} missing"
        elif not any(values_match(given[key], option) for option in options if option != "" or given[key] == ""):
            return f"key {key!r}: {given[key]!r:.80} not allowed"
    return None


def _names_equal(given: str, expected: str, options: FunctionCallOptions) -> bool:
    return given == expected or (options.underscore_for_dot and given == expected.replace(".", "_"))


def match_call(call: Call, expected_name: str, expected: dict, schema: ParamSchema | None,
               options: FunctionCallOptions) -> str | None:
    """None when ``call`` satisfies one possible answer ``{expected_name: expected}``, else the broken rule."""
    if not _names_equal(call.name, expected_name, options):
        return f"function {call.name!r} is not {expected_name!r}"
    if schema is not None:
        for name in schema.required:
            if name not in call.arguments:
                return f"{expected_name}: required parameter {name!r} missing"
        for name in call.arguments:
            if name not in schema.properties:
                return f"{expected_name}: parameter {name!r} is not in the schema"
    for name, value in call.arguments.items():
        if name not in expected:
            return f"{expected_name}: parameter {name!r} is not in the possible answer"
        if schema is not None:
            problem = check_type(value, schema.properties[name])
            if problem:
                return f"{expected_name}.{name}: {problem}"
        allowed = expected[name]
        if not any(values_match(value, option) for option in allowed if option != "" or value == ""):
            return f"{expected_name}.{name}: {value!r:.80} not among the allowed values"
    for name, allowed in expected.items():
        if name not in call.arguments and "" not in allowed:
            return f"{expected_name}: parameter {name!r} missing (not optional in the possible answer)"
    return None


def _augment(row: int, edges: list[list[int]], owner: list[int | None], seen: set[int]) -> bool:
    """Kuhn's augmenting path from call ``row`` (iterative over at most a few dozen calls)."""
    for col in edges[row]:
        if col in seen:
            continue
        seen.add(col)
        if owner[col] is None or _augment(owner[col], edges, owner, seen):
            owner[col] = row
            return True
    return False


def match_all(calls: list[Call], answers: list[tuple[str, dict]], schemas: dict[str, ParamSchema] | None,
              options: FunctionCallOptions) -> str | None:
    """None when the calls match the answers one to one in any order (BFCL's parallel rule), else why not."""
    if len(calls) != len(answers):
        return f"{len(calls)} calls, expected {len(answers)}"
    edges = []
    for call in calls:
        row, problems = [], []
        for j, (name, expected) in enumerate(answers):
            schema = None if schemas is None else schemas.get(name)
            problem = match_call(call, name, expected, schema, options)
            if problem is None:
                row.append(j)
            else:  # a rule broken by a call of the right name explains more than a name mismatch
                problems.append((not _names_equal(call.name, name, options), problem))
        if not row:
            return min(problems, key=lambda p: p[0])[1]
        edges.append(row)
    owner: list[int | None] = [None] * len(answers)
    for row in range(len(calls)):
        if not _augment(row, edges, owner, set()):
            return "no one-to-one assignment of calls to expected calls"
    return None


def check(response: str, ground_truth, tools=None, **options) -> Verdict:
    """The verdict on one response (see the module docstring)."""
    opts = parse_options(options)
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    answers = parse_ground_truth(ground_truth)
    schemas = None if tools is None else parse_tools(tools)
    if schemas is not None:
        for name, _ in answers:
            if name not in schemas:
                raise ValueError(f"ground_truth names function {name!r}, which is not among the tools")
    try:
        calls = parse_calls(response, opts.max_response_chars, opts.max_depth)
    except CallParseError as exc:
        return Verdict(exc.reason, exc.detail)
    problem = match_all(calls, answers, schemas, opts)
    return Verdict("correct" if problem is None else "wrong", problem or "all calls match", calls)


def _answer_text(calls: list[Call] | None, limit: int = 2000) -> str | None:
    """The parsed calls as compact JSON for logging (cut at ``limit`` characters)."""
    if calls is None:
        return None
    text = json.dumps([c.to_json() for c in calls], ensure_ascii=False, separators=(",", ":"), default=str)
    return text[:limit]


def score(response: str, ground_truth, tools=None, **options) -> dict:
    """Score one response; see the module docstring for the result keys."""
    opts = parse_options(options)
    verdict = check(response, ground_truth, tools, **options)
    value = 1.0 if verdict.reason == "correct" else opts.negative_reward
    return {"score": float(value), "answer": _answer_text(verdict.calls), "reason": verdict.reason}
