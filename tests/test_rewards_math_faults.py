"""Regressions for the five math-verifier faults of issue 15, each with the issue's examples and our own.

Every expected verdict is worked out by hand from the mathematics and the documented policy (docs/rewards.md,
"Answers with several parts" and "A sentence as the answer").
"""

import json
import os
import subprocess
import sys

import pytest

from verl_resrl.rewards.math import score
from verl_resrl.rewards.math_answer import extract_answer, final_expression, last_box_group, normalize

C, W = "correct", "wrong"


def _check(response, ground_truth, expected):
    """The verdict and its signed reward."""
    result = score(response, ground_truth)
    assert result["reason"] == expected, result
    assert result["score"] == (1.0 if expected == C else -1.0)


# 1. "1, 234" is a list of two numbers, not one thousand two hundred and thirty-four.
LISTS = [
    ("Answer: 1, 234", "1234", W),  # the example
    (r"\boxed{32, 349}", "32349", W),  # the Math-Verify case the issue found
    ("Answer: 12, 345", "12345", W),
    (r"\boxed{1, 000}", "1000", W),
    ("Answer: 7, 500", "7,500", W),  # gold 7,500 is one number (no space), the answer two
    ("Answer: 1,234", "1234", C),  # no space: a thousands separator, as before
    ("Answer: 1, 234", "1, 234", C),
    ("Answer: 2, 1", "1,2", C),  # a bare list is unordered, like a set
]


@pytest.mark.parametrize("response,ground_truth,expected", LISTS)
def test_a_spaced_list_is_not_one_number(response, ground_truth, expected):
    _check(response, ground_truth, expected)


def test_normalize_keeps_the_list_separator():
    assert normalize("32, 349") == "32, 349"
    assert normalize("32 ,  349") == "32, 349"
    assert normalize("12,345") == "12345"
    assert normalize("1 000") == "1000"


# 2. A sentence on the Answer: line: its final expression is the answer (Minerva's and math-verify's reading).
MINERVA = "Final Answer: The final answer is {}. I hope it is correct."
SENTENCES = [
    (MINERVA.format("7.78"), "7.78", C),  # the examples
    (MINERVA.format("[0,1)"), "[0,1)", C),
    (MINERVA.format(r"\sqrt2"), r"\sqrt{2}", C),
    (MINERVA.format("3"), "3", C),
    (MINERVA.format("$16386.16$"), "16386.16", C),
    ("The total is \\boxed{16386.16}.\n" + MINERVA.format("16386.16"), "16386.16", C),
    (MINERVA.format("7.77"), "7.78", W),  # a wrong number in the sentence stays wrong
    ("Answer: The answer is 42.", "42", C),
    ("Answer: The largest $n$ is 34.", "34", C),  # the number after the last math segment
    ("Answer: x = 5. This is because the sum is 10.", "5", C),  # the sentence after the expression is dropped
    (r"Answer: The final answer is $\frac{3}{4}$.", "0.75", C),
    ("Answer: approximately $3.14$", "3.14", C),
    ("Answer: the roots are $2$ and $3$", "2, 3", C),  # math segments joined by "and" form one answer
    ("Answer: the roots are $2$ and $3$", "3", W),
    ("Answer: The midpoints form a regular hexagon", "The midpoints form a regular hexagon", C),  # text answer
]


@pytest.mark.parametrize("response,ground_truth,expected", SENTENCES)
def test_a_sentence_yields_its_final_expression(response, ground_truth, expected):
    _check(response, ground_truth, expected)


@pytest.mark.parametrize(
    "text,expression",
    [
        ("The final answer is 7.78. I hope it is correct.", "7.78"),
        ("12 square units", "12"),
        (r"\begin{pmatrix}1 & 2\\ 3 & 4\end{pmatrix}", r"\begin{pmatrix}1 & 2\\ 3 & 4\end{pmatrix}"),  # not prose
        ("Therefore $x \\geq 5$ is the solution.", "x \\geq 5"),
        (r"It costs \$5, so $x = 2$ here", "x = 2"),  # an escaped \$ is a dollar sign, not a math delimiter
    ],
)
def test_final_expression(text, expression):
    assert final_expression(text) == expression


@pytest.mark.parametrize("suffix", ["1", "1b2c", "9-1"])
def test_digits_inside_code_or_paths_are_not_an_answer(suffix):
    """The number of a sentence stands alone: the digits of a path or identifier are never the answer."""
    result = score(f"Answer: __import__('os').system('touch /tmp/pwned-{suffix}')", "1")
    assert result["reason"] != "correct", result


# 3. Markdown emphasis around the Answer: label or the answer.
MARKDOWN = [
    ("**Answer:** 1/2", "0.5", C),  # the examples
    ("Answer: **3**", "3", C),
    (r"**Answer**: \frac{3}{4}", "0.75", C),
    ("**Answer: 12**", "12", C),
    ("__Answer:__ 7", "7", C),
    ("*Answer:* -2", "-2", C),
    ("**Answer:** 1/3", "0.5", W),
    ("Answer: 2**10", "1024", C),  # a Python power is not emphasis
]


@pytest.mark.parametrize("response,ground_truth,expected", MARKDOWN)
def test_markdown_emphasis_is_stripped(response, ground_truth, expected):
    _check(response, ground_truth, expected)


def test_a_conjugate_star_is_kept():
    assert extract_answer("**Answer:** $z^*$") == "z^*"


# 4. Several boxes: one answer when only connectors separate them; gold and prediction read alike.
BOXES = [
    (r"\boxed{1}, \boxed{2}", "1, 2", C),  # the examples
    ("Answer: 2", r"\boxed{1} and \boxed{2}", W),
    (r"\boxed{1}, \boxed{2}", "2, 1", C),
    (r"\boxed{1}, \boxed{2}", "2", W),  # hedging over several boxes earns nothing
    (r"\boxed{3} or \boxed{4}", "4", W),
    ("Answer: 1, 2", r"\boxed{1} and \boxed{2}", C),
    (r"\boxed{3}", r"\boxed{3} and \boxed{5}", W),
    (r"\boxed{1} \quad\text{and}\quad \boxed{2}", r"\{1,2\}", C),
    (r"\(x = \boxed{3}\) or \(x = \boxed{-1}\)", "-1, 3", C),
    (r"\boxed{(1, 2)}, \boxed{(3, 4)}", "(3,4),(1,2)", C),
    (r"\boxed{(1, 2)}, \boxed{(3, 4)}", "(3,4)", W),
    ("Answer: x = 1 or x = 2", "1, 2", C),
    ("Answer: x = 1 or x = 2", "1", W),
    # a correction: the last box is the answer (the existing rule)
    (r"First \boxed{3}, but corrected: \boxed{4}", "4", C),
    (r"\boxed{3}. Wait, that is wrong: \boxed{4}", "4", C),
    (r"\boxed{3} but actually \boxed{4}", "4", C),
    (r"\boxed{3} but actually \boxed{4}", "3, 4", W),
    (r"\boxed{5}, \boxed{5}", "5", C),  # the parts form a set: a repeated part counts once
]


@pytest.mark.parametrize("response,ground_truth,expected", BOXES)
def test_several_boxes(response, ground_truth, expected):
    _check(response, ground_truth, expected)


@pytest.mark.parametrize(
    "text,parts",
    [
        (r"\boxed{1} papers and \boxed{2} bins", ["1", "2"]),
        (r"\boxed{(3, 3)} \text{ for part (a) and } \boxed{(1, 1)}", ["(3, 3)", "(1, 1)"]),
        (r"\( y_1 = \boxed{a} \) and \( y_2 = \boxed{b} \)", ["a", "b"]),
        (r"\boxed{\boxed{3}}", ["3"]),  # nested: the inner box
        (r"\boxed{1} - \boxed{2}", ["2"]),  # an operator is not a connector
        (r"\boxed{1} and then a long explanation of why, over many words, \boxed{2}", ["2"]),
    ],
)
def test_box_groups(text, parts):
    assert last_box_group(text)[1] == parts


# 5. The first call in a fresh process pays no import inside its deadline, even on a loaded machine.
FIRST_CALL = (
    "import json, sys; from verl_resrl.rewards.math import score; "
    "print(json.dumps(score(sys.argv[1], sys.argv[2], timeout_s=float(sys.argv[3]))))"
)
TINY_FIRST_CALL = (
    "import json, sys; from verl_resrl.tiny.reward import compute_score; from verl_resrl.tiny.task import "
    "DATA_SOURCE; print(json.dumps(compute_score(DATA_SOURCE, sys.argv[1], sys.argv[2])))"
)


@pytest.fixture
def busy_cores():
    """A busy loop on every core while the test runs."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for proc in loops:
            proc.kill()
            proc.wait()


def _fresh(code, *args):
    """The JSON line printed by ``code`` run in a new interpreter."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "response,ground_truth,timeout_s",
    [
        (r"\boxed{\frac{1}{2}}", "0.5", 5.0),  # the default timeout
        # timeouts below the import's own cost (1-2 s): only a check that excludes the imports can pass them
        (r"\boxed{\frac{1}{2}}", "0.5", 1.0),
        ("Answer: x^2+2x+1", "(x+1)^2", 1.0),
        (r"\boxed{2\sqrt{3}}", r"\sqrt{12}", 1.0),
    ],
)
def test_first_call_in_a_fresh_process_under_load(busy_cores, response, ground_truth, timeout_s):
    assert _fresh(FIRST_CALL, response, ground_truth, str(timeout_s))["reason"] == "correct"


def test_tiny_reward_first_call_under_load(busy_cores):
    assert _fresh(TINY_FIRST_CALL, "12 + 30\nAnswer: 42", "42")["acc"] == 1.0
