"""Answer extraction, normalisation and input guards for the math verifier.

Everything here is plain string work with bounded cost (linear scans, capped lengths): it runs before any sympy or
math-verify call so that hostile model outputs (megabyte strings, power towers, deep nesting) are rejected cheaply
instead of being handed to a parser that may never return.
"""

from __future__ import annotations

import math
import re

# Only the tail of a response is searched: the final answer sits at the end, and a cap keeps regex work linear in a
# bounded size. DAPO's scorer keeps the last 300 characters; we keep more so long boxed matrices are not cut.
RESPONSE_TAIL_CHARS = 4000
# An extracted answer longer than this is not parsed symbolically (reason "parse_error" unless string-equal).
MAX_ANSWER_CHARS = 400
# Brace/bracket/parenthesis nesting deeper than this is refused before parsing (recursive parsers blow the stack).
MAX_NESTING_DEPTH = 24
# A literal integer power a^b whose value would exceed this many decimal digits is refused before sympy sees it:
# CPython's big-int power runs in C without checking signals, so no in-process timeout could stop it.
MAX_POWER_DIGITS = 2000

_ANSWER_LINE = re.compile(r"(?i)answer\s*:\s*([^\n]*)")
_BOX_OPENERS = ("\\boxed{", "\\fbox{", "\\boxed {")


def _matching_brace(text: str, open_idx: int) -> int | None:
    """Index of the brace that closes the one at ``open_idx`` (None when unbalanced)."""
    depth = 0
    for i in range(open_idx, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def last_boxed(text: str) -> tuple[int, str] | None:
    """(start index, content) of the last complete ``\\boxed{...}`` (or ``\\fbox{}``) in ``text``."""
    best = None
    for opener in _BOX_OPENERS:
        start = text.rfind(opener)
        while start >= 0:
            close = _matching_brace(text, start + len(opener) - 1)
            if close is not None:
                if best is None or start > best[0]:
                    best = (start, text[start + len(opener) : close])
                break
            start = text.rfind(opener, 0, start)  # an unclosed box (truncated output): try the previous one
    return best


def _clean(answer: str) -> str:
    """Strip math delimiters and trailing punctuation around an extracted answer."""
    ans = answer.strip().rstrip(".").strip()
    for left, right in (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"), ("$", "$")):
        if ans.startswith(left) and ans.endswith(right) and len(ans) >= len(left) + len(right):
            ans = ans[len(left) : len(ans) - len(right)].strip()
    ans = ans.rstrip(".").strip()
    if ans.startswith("$") and ans.count("$") == 1:
        ans = ans[1:]
    if ans.endswith("$") and ans.count("$") == 1:
        ans = ans[:-1]
    return ans.strip()


def extract_answer(response: str) -> str | None:
    """The final answer of a response: the last DAPO ``Answer:`` line or ``\\boxed{}``, whichever comes last.

    An ``Answer:`` line that itself contains a box yields the box content. None when neither is present or the
    answer is empty.
    """
    tail = response[-RESPONSE_TAIL_CHARS:]
    line_match = None
    for line_match in _ANSWER_LINE.finditer(tail):
        pass
    boxed = last_boxed(tail)
    if line_match is not None and (boxed is None or line_match.start() > boxed[0]):
        inner = last_boxed(line_match.group(1))
        candidate = inner[1] if inner is not None else line_match.group(1)
    elif boxed is not None:  # also covers a box inside the last Answer line
        candidate = boxed[1]
    else:
        return None
    return _clean(candidate) or None


def unwrap_ground_truth(ground_truth: str) -> str:
    """Ground truths may come boxed (MATH) or plain (DAPO-Math-17k): return the plain answer."""
    boxed = last_boxed(ground_truth)
    return _clean(boxed[1] if boxed is not None else ground_truth)


def nesting_depth(text: str) -> int:
    """Maximum nesting depth of (), [] and {} in ``text`` (unbalanced closers are ignored)."""
    depth = best = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            best = max(best, depth)
        elif ch in ")]}" and depth > 0:
            depth -= 1
    return best


# a literal power: base digits, then ^ or **, then an optional brace, then exponent digits (sign allowed)
_LITERAL_POWER = re.compile(r"(\d+(?:\.\d+)?)\s*(?:\^|\*\*)\s*\{?\s*\(?\s*([+-]?\d+)")
# a power whose exponent itself starts with a power of literals: a^{b^c}, a**b**c
_POWER_TOWER = re.compile(r"\d\s*(?:\^|\*\*)\s*\{?\s*\(?\s*\d+\s*(?:\^|\*\*)")


# 1e400000: sympy turns the decimal into an exact Rational, computing 10**400000 in C (no signal can stop it)
_SCIENTIFIC_HUGE = re.compile(r"\d\.?\d*\s*[eE]\s*[+-]?\s*\d{3,}")


def unsafe_reason(answer: str) -> str | None:
    """Why ``answer`` must not reach a symbolic parser, or None when it is safe enough to try."""
    if len(answer) > MAX_ANSWER_CHARS:
        return f"answer longer than {MAX_ANSWER_CHARS} characters"
    if nesting_depth(answer) > MAX_NESTING_DEPTH:
        return f"nesting deeper than {MAX_NESTING_DEPTH}"
    if _POWER_TOWER.search(answer):
        return "power tower of literals"
    for base, exponent in _LITERAL_POWER.findall(answer):
        base_value, exp_value = abs(float(base)), abs(int(exponent)) if len(exponent) < 12 else 10**12
        if base_value > 1 and exp_value * math.log10(base_value) > MAX_POWER_DIGITS:
            return f"literal power {base}^{exponent} too large"
    if _SCIENTIFIC_HUGE.search(answer):
        return "scientific notation with a huge exponent"
    if re.search(r"\d!\s*!|\d{4,}\s*!|\)\s*!", answer):
        return "large factorial"
    return None


# --- string normalisation (the cheap first equivalence test) -------------------------------------------------------

_UNIT_WORDS = (
    "degrees", "degree", "units", "unit", "cm", "meters", "meter", "km", "inches", "inch", "feet", "foot", "miles",
    "mph", "hours", "hour", "minutes", "minute", "seconds", "second", "dollars", "dollar", "cents", "cent", "points",
    "ways", "square", "sq", "pounds", "students", "people", "days", "day", "years", "year",
)
_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_UNIT_PATTERN = re.compile(r"(?<=[\d}\s])\s*(?:" + "|".join(_UNIT_WORDS) + r")\b(?:\^\{?[23]\}?)?", re.IGNORECASE)


def normalize(answer: str) -> str:
    """A canonical string form: no spacing, text wrappers, units, degree/percent signs or thousands separators."""
    s = answer.strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", " ").replace("~", " ")
    s = s.replace("{,}", ",")
    s = _TEXT_WRAPPERS.sub(r"\1", s)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\circ", "").replace("°", "")
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "")
    s = _UNIT_PATTERN.sub("", s)
    # the thousands rule runs only when the answer is a single number, so a tuple "(1,234)" is kept
    if re.fullmatch(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s.strip()):
        s = s.replace(",", "")
    s = re.sub(r"\s+", "", s)
    if re.fullmatch(r"[a-zA-Z]\s*=.+", s) and "," not in s:  # "x=5" -> "5" (a single assignment only)
        s = s.split("=", 1)[1]
    s = s.rstrip(".")
    if re.fullmatch(r"[+-]?\d+\.\d*", s):  # "2.50" -> "2.5", "3." -> "3"
        s = s.rstrip("0").rstrip(".") or "0"
    return s
