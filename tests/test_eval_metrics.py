"""Evaluation metrics against exact combinatorics, subset enumeration and hand-derived values."""

import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from verl_resrl.eval.metrics import (
    avg_at_k,
    default_ks,
    distinct_answers,
    distinct_n,
    maj_at_k,
    mean_token_entropy,
    pass_at_k,
    pass_at_k_array,
    validation_metrics,
)


def exact(n, c, k):
    """1 - C(n-c, k) / C(n, k) in exact rational arithmetic (math.comb is 0 when n-c < k)."""
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def random_cases(count, seed=0, n_max=200):
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        n = rng.randint(1, n_max)
        cases.append((n, rng.randint(0, n), rng.randint(1, n)))
    return cases


@pytest.mark.parametrize("n, c, k", random_cases(300))
def test_pass_at_k_matches_exact_binomial_ratio(n, c, k):
    assert abs(pass_at_k(n, c, k) - exact(n, c, k)) < 1e-12


def test_pass_at_k_n128_every_c_and_paper_k():
    for c in range(129):
        for k in (1, 2, 4, 8, 16, 32, 64, 128):
            assert abs(pass_at_k(128, c, k) - exact(128, c, k)) < 1e-12, (c, k)


def test_pass_at_k_edge_cases():
    for n in (1, 2, 7, 16, 128):
        for k in range(1, n + 1):
            assert pass_at_k(n, 0, k) == 0.0  # no correct sample: never passes
            assert pass_at_k(n, n, k) == 1.0  # all correct: always passes
        for c in range(n + 1):
            assert pass_at_k(n, c, n) == (1.0 if c > 0 else 0.0)  # k = n: any correct among all samples
            assert abs(pass_at_k(n, c, 1) - c / n) < 1e-15  # Pass@1 is the accuracy


def test_pass_at_k_equals_mean_over_all_size_k_subsets():
    """The definition: probability that a uniformly drawn size-k subset (no replacement) holds a correct sample."""
    rng = random.Random(1)
    for _ in range(20):
        n = rng.randint(1, 10)
        correct = [rng.random() < 0.3 for _ in range(n)]
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            expected = sum(any(correct[i] for i in s) for s in subsets) / len(subsets)
            assert abs(pass_at_k(n, sum(correct), k) - expected) < 1e-12


def biased_max_over_first_k(correct, k):
    return float(max(correct[:k]))


def biased_bootstrap_best_of_k(correct, k, draws=2000, seed=42):
    rng = np.random.default_rng(seed)
    return float(np.mean([max(rng.choice(correct, size=k, replace=True)) for _ in range(draws)]))


def test_biased_estimators_would_fail_these_expectations():
    """One correct of four: Pass@4 must be 1.0 and Pass@1 0.25; verl-style bootstrap and max-of-first-k miss both."""
    correct = [0, 0, 0, 1]
    assert pass_at_k(4, 1, 4) == 1.0
    assert abs(pass_at_k(4, 1, 1) - 0.25) < 1e-15
    assert abs(pass_at_k(4, 1, 2) - 0.5) < 1e-15  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    # the same expectations reject the biased estimators (so a regression to either is caught)
    assert abs(biased_bootstrap_best_of_k(correct, 4) - 1.0) > 0.2  # ~0.68
    assert abs(biased_max_over_first_k(correct, 1) - 0.25) > 0.2
    assert abs(biased_max_over_first_k(correct, 2) - 0.5) > 0.2
    # and through the trainer-facing helper
    metrics = validation_metrics(["p"] * 4, [-1, -1, -1, 1])
    assert metrics["pass@4"] == 1.0 and abs(metrics["pass@2"] - 0.5) < 1e-15


def test_pass_at_k_rejects_bad_input():
    with pytest.raises(ValueError, match="c"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="k"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="k"):
        pass_at_k(4, 1, 0)
    with pytest.raises(TypeError, match="n"):
        pass_at_k(4.0, 1, 1)


def test_pass_at_k_array_agrees_with_scalar_form():
    cases = random_cases(500, seed=3, n_max=150)
    for k in (1, 2, 5, 16, 64):
        kept = [(n, c) for n, c, _ in cases if n >= k]
        n_arr = np.array([n for n, _ in kept])
        c_arr = np.array([c for _, c in kept])
        got = pass_at_k_array(n_arr, c_arr, k)
        for (n, c), value in zip(kept, got):
            assert abs(value - exact(n, c, k)) < 1e-12, (n, c, k)


def test_pass_at_k_array_errors_name_the_prompt():
    with pytest.raises(ValueError, match="prompt 1"):
        pass_at_k_array([4, 4], [1, 5], 1)
    with pytest.raises(ValueError, match="prompt 0"):
        pass_at_k_array([2, 8], [1, 1], 4)
    assert pass_at_k_array([], [], 1).shape == (0,)


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(16) == [1, 2, 4, 8, 16]
    assert default_ks(128) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert default_ks(12) == [1, 2, 4, 8, 12]


def test_avg_at_k():
    assert avg_at_k([1, 0, 0, 1]) == 0.5
    assert avg_at_k([True, True, False]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="score > 0"):
        avg_at_k([1, -1])
    with pytest.raises(ValueError, match="at least one"):
        avg_at_k([])


def test_maj_at_k():
    # "4" gets two votes, "3" one: the majority answer is correct
    assert maj_at_k(["4", "3", "4"], [1, 0, 1]) == 1.0
    assert maj_at_k(["3", "3", "4"], [0, 0, 1]) == 0.0
    # unparsed answers do not vote; only the first k samples count
    assert maj_at_k([None, None, "4", ""], [0, 0, 1, 0]) == 1.0
    assert maj_at_k(["3", "4", "4"], [0, 1, 1], k=1) == 0.0
    # tie: the answer seen first wins
    assert maj_at_k(["4", "3"], [1, 0]) == 1.0 and maj_at_k(["3", "4"], [0, 1]) == 0.0
    assert maj_at_k([None, None], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="k=3"):
        maj_at_k(["1"], [1], k=3)


def test_distinct_answers_and_distinct_n():
    assert distinct_answers(["1", "2", "1", None, ""]) == 2
    assert distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)  # (1,2),(2,1),(1,2)
    assert distinct_n([[1, 2], [1, 2]], 1) == pytest.approx(2 / 4)  # pooled over responses
    assert distinct_n([[1, 2, 3], [4]], 3) == 1.0  # the short response has no 3-gram
    assert distinct_n([[1]], 2) == 0.0


def test_mean_token_entropy_estimates_entropy():
    assert mean_token_entropy([[math.log(0.25)] * 3, [math.log(0.25)]]) == pytest.approx(math.log(4))
    probs = np.array([0.5, 0.25, 0.125, 0.125])
    entropy = float(-(probs * np.log(probs)).sum())
    tokens = np.random.default_rng(0).choice(4, size=(40, 500), p=probs)
    log_probs = np.log(probs)[tokens]
    # 20k draws: the estimator's std is ~0.005, so 0.03 is > 5 sigma
    assert abs(mean_token_entropy(log_probs.tolist()) - entropy) < 0.03
    with pytest.raises(ValueError, match="<= 0"):
        mean_token_entropy([[0.5]])


def test_validation_metrics_by_hand():
    # interleaved uids: a has 3/4 correct, b 0/4, c 4/4 (scores in DAPO's +1/-1 convention)
    uids = ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b", "c"]
    scores = [1, -1, 1, 1, -1, 1, -1, -1, 1, 1, -1, 1]
    answers = ["2", "5", "7", "2", "6", "7", "3", "5", "7", "2", None, "7"]
    m = validation_metrics(uids, scores, answers)
    assert set(m) == {"avg@4", "pass@1", "pass@2", "pass@4", "maj@4", "distinct_answers"}
    assert m["avg@4"] == pytest.approx((0.75 + 0 + 1) / 3)
    assert m["pass@1"] == pytest.approx((0.75 + 0 + 1) / 3)
    assert m["pass@2"] == pytest.approx((1.0 + 0 + 1) / 3)  # a: 1 - C(1,2)/C(4,2) = 1
    assert m["pass@4"] == pytest.approx(2 / 3)
    assert m["maj@4"] == pytest.approx(2 / 3)  # a votes "2" (correct), b "5" (wrong), c "7"
    assert m["distinct_answers"] == pytest.approx((2 + 2 + 1) / 3)
    assert validation_metrics(uids, scores, ks=[3]) == {"avg@4": m["avg@4"], "pass@3": pytest.approx((1 + 0 + 1) / 3)}


def test_validation_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="column 0"):
        validation_metrics(["a", "a"], [1])
    with pytest.raises(ValueError, match="smallest group"):
        validation_metrics(["a", "a", "b"], [1, 0, 1], ks=[2])
    with pytest.raises(ValueError, match="at least one"):
        validation_metrics([], [])
