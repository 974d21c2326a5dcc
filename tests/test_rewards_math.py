"""Math verifier: a hand-derived equivalence table, answer extraction, reward conventions and length scaling."""

import pytest

from verl_resrl.rewards.math import score
from verl_resrl.rewards.math_answer import extract_answer

C, W, N = "correct", "wrong", "no_answer"

# (response, ground truth, expected reason); every expectation is worked out by hand from the mathematics and the
# documented rules (last Answer:/\boxed{} wins; units, degree and percent signs, \text{} and thousands separators
# are presentation, not value).
EQUIVALENCE_TABLE = [
    # fractions vs decimals
    (r"\boxed{\frac{1}{2}}", "0.5", C),
    (r"\boxed{0.5}", r"\frac{1}{2}", C),
    (r"\boxed{\dfrac{3}{4}}", "0.75", C),
    (r"\boxed{\tfrac{1}{3}}", r"\frac{1}{3}", C),
    (r"\boxed{0.33}", r"\frac{1}{3}", W),
    (r"\boxed{\frac{2}{4}}", r"\frac{1}{2}", C),
    (r"\boxed{1/2}", r"\frac{1}{2}", C),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{3}", W),
    (r"\boxed{-\frac{1}{2}}", "-0.5", C),
    (r"\boxed{\frac{-1}{2}}", r"-\frac{1}{2}", C),
    (r"\boxed{\dfrac{7}{2}}", "3.5", C),
    # integers and thousands separators
    ("Answer: 1,000", "1000", C),
    ("Answer: 1{,}000", "1000", C),
    (r"\boxed{12,345,678}", "12345678", C),
    (r"\boxed{1000}", "1,000", C),
    (r"\boxed{1,001}", "1000", W),
    ("Answer: 41", "42", W),
    (r"\boxed{1\,000}", "1000", C),
    # intervals
    (r"\boxed{[1, 2)}", "[1,2)", C),
    (r"\boxed{(1, 2)}", "[1,2]", W),
    (r"\boxed{(-\infty, 3]}", r"(-\infty,3]", C),
    (r"\boxed{[0,1]\cup[2,3]}", r"[0,1] \cup [2,3]", C),
    (r"\boxed{(0, 1)}", "(0,2)", W),
    # sets
    (r"\boxed{\{1,2,3\}}", r"\{3,2,1\}", C),
    (r"\boxed{\{1,2\}}", r"\{1,2,3\}", W),
    (r"\boxed{\{-1, 1\}}", r"\{1,-1\}", C),
    # matrices
    (r"\boxed{\begin{pmatrix}1 & 2\\ 3 & 4\end{pmatrix}}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", C),
    (r"\boxed{\begin{bmatrix}1 & 2\\ 3 & 4\end{bmatrix}}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", C),
    (r"\boxed{\begin{pmatrix}1 & 2\\ 3 & 5\end{pmatrix}}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", W),
    (r"\boxed{\begin{pmatrix} 1/2 \\ 3 \end{pmatrix}}", r"\begin{pmatrix}\frac{1}{2}\\3\end{pmatrix}", C),
    # degrees
    (r"\boxed{30^\circ}", "30", C),
    (r"\boxed{30^{\circ}}", r"30^\circ", C),
    (r"\boxed{45°}", "45", C),
    (r"\boxed{30^\circ}", "60", W),
    ("Answer: 90 degrees", "90", C),
    # percentages
    (r"\boxed{50\%}", "50", C),
    (r"\boxed{50}", r"50\%", C),
    ("Answer: 12.5%", "12.5", C),
    (r"\boxed{50\%}", "40", W),
    # units and currency
    ("Answer: 5 cm", "5", C),
    (r"\boxed{12 \text{ meters}}", "12", C),
    (r"\boxed{7\text{ inches}}", "7", C),
    (r"\boxed{\$25}", "25", C),
    (r"\boxed{3 \text{ hours}}", "4", W),
    # \text{}
    (r"\boxed{\text{B}}", "B", C),
    (r"\boxed{\textbf{(C)}}", "(C)", C),
    (r"\boxed{\text{Tuesday}}", "Tuesday", C),
    (r"\boxed{\text{odd}}", "even", W),
    # several boxed answers: the last one is the final answer
    (r"First \boxed{3}, but corrected: \boxed{4}", "4", C),
    (r"First \boxed{3}, but corrected: \boxed{4}", "3", W),
    # the DAPO "Answer:" format
    ("Let me compute.\nAnswer: 17", "17", C),
    (r"Answer: $\frac{1}{2}$", "0.5", C),
    ("answer: 9", "9", C),
    ("Answer: 3\nwait, no.\nAnswer: 5", "5", C),
    (r"Answer: \boxed{12}", "12", C),
    ("Answer: 12.", "12", C),
    ("Answer: x = 5", "5", C),
    ("So \\boxed{7}.\nAnswer: 8", "8", C),
    ("Answer: 8\nActually \\boxed{7}", "7", C),
    # symbolic forms
    (r"\boxed{\sqrt{2}/2}", r"\frac{\sqrt{2}}{2}", C),
    (r"\boxed{2\sqrt{3}}", r"\sqrt{12}", C),
    (r"\boxed{\pi/2}", r"\frac{\pi}{2}", C),
    (r"\boxed{x^2+2x+1}", "(x+1)^2", C),
    (r"\boxed{2^{10}}", "1024", C),
    (r"\boxed{3.14}", r"\pi", W),
    (r"\boxed{10^{3}}", "1000", C),
    # tuples (order matters)
    (r"\boxed{(1, 2)}", "(1,2)", C),
    (r"\boxed{(2, 1)}", "(1,2)", W),
    # ground truth given boxed (MATH style)
    (r"\boxed{6}", r"\boxed{6}", C),
    # no final answer
    ("I think it is 5", "5", N),
    ("\\boxed{5", "5", N),
    ("Answer:", "5", N),
]


def test_table_is_large_enough():
    assert len(EQUIVALENCE_TABLE) >= 60


@pytest.mark.parametrize("response,ground_truth,expected", EQUIVALENCE_TABLE)
def test_equivalence_table(response, ground_truth, expected):
    result = score(response, ground_truth)
    assert result["reason"] == expected, result
    assert result["score"] == (1.0 if expected == C else -1.0)


@pytest.mark.parametrize(
    "response,answer",
    [
        ("Answer: 42", "42"),
        (r"The result is \boxed{\frac{a}{b}}.", r"\frac{a}{b}"),
        (r"\boxed{\boxed{3}}", "3"),  # the box that starts last: the innermost
        (r"$\boxed{4}$", "4"),
        ("Answer: $7$.", "7"),
        (r"\fbox{9}", "9"),
        ("no answer here", None),
    ],
)
def test_extracted_answer(response, answer):
    assert extract_answer(response) == answer


def test_only_the_tail_of_a_long_response_is_searched():
    early_box = r"\boxed{1}" + "x" * 10_000
    assert extract_answer(early_box) is None
    assert score(early_box + "\nAnswer: 2", "2")["reason"] == "correct"


def test_binary_convention():
    assert score("Answer: 3", "3", reward_convention="binary")["score"] == 1.0
    assert score("Answer: 4", "3", reward_convention="binary")["score"] == 0.0
    assert score("nothing", "3", reward_convention="binary") == {"score": 0.0, "answer": None, "reason": "no_answer"}


def _length_scaled(length):
    """Reference rule by hand: 1.0 up to 3500 tokens, then linear to 0.7 at 4096."""
    if length <= 3500:
        return 1.0
    return 1.0 - 0.3 * min(1.0, (length - 3500) / 596)


@pytest.mark.parametrize("length", [0, 3500, 3501, 3798, 4096, 5000])
def test_length_scaled_positive_reward(length):
    opts = dict(length_scale_start=3500, max_response_length=4096, response_length=length)
    assert score("Answer: 5", "5", **opts)["score"] == pytest.approx(_length_scaled(length))
    # negatives are never scaled
    assert score("Answer: 6", "5", **opts)["score"] == -1.0


def test_length_scaling_floor_and_binary_together():
    out = score("Answer: 5", "5", reward_convention="binary", length_scale_start=100, max_response_length=200,
                length_scale_floor=0.5, response_length=150)
    assert out["score"] == pytest.approx(0.75)


def test_unknown_option_names_the_key():
    with pytest.raises(TypeError, match="reward_scale"):
        score("Answer: 1", "1", reward_scale=2.0)


@pytest.mark.parametrize(
    "options,key",
    [
        ({"reward_convention": "plusminus"}, "reward_convention"),
        ({"length_scale_start": 3500, "response_length": 10}, "max_response_length"),
        ({"length_scale_start": 3500, "max_response_length": 4096}, "response_length"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_bad_option_values_name_the_key(options, key):
    with pytest.raises(ValueError, match=key):
        score("Answer: 1", "1", **options)


def test_integer_ground_truth_and_bad_types():
    assert score("Answer: 12", 12)["reason"] == "correct"
    with pytest.raises(TypeError, match="ground_truth"):
        score("Answer: 1", 1.5)
    with pytest.raises(TypeError, match="response"):
        score(None, "1")


def test_answer_key_carries_the_extracted_answer():
    assert score(r"so \boxed{x=5}", "5") == {"score": 1.0, "answer": "x=5", "reason": "correct"}
