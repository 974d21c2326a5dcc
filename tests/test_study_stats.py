"""The study report's statistics against values computed by hand on fixed toy tables."""

import math

import numpy as np
import pytest

from verl_resrl.study.stats import Interval, bootstrap_means, describe, paired_bootstrap, per_prompt_pass_at_k, seed_mean_sd

# 3 seeds x 4 prompts of a metric for two methods (paired by seed and prompt)
A = [[1.0, 0.5, 0.0, 0.5],
     [1.0, 1.0, 0.0, 0.0],
     [0.5, 0.5, 0.5, 0.5]]
B = [[0.5, 0.5, 0.0, 0.0],
     [1.0, 0.5, 0.0, 0.0],
     [0.5, 0.0, 0.5, 0.0]]


def test_seed_mean_and_sd_by_hand():
    # per-seed means of A: 2/4, 2/4, 2/4 -> mean 0.5, sd 0; of B: 1/4, 1.5/4, 1/4
    assert seed_mean_sd(A) == (0.5, 0.0)
    mean, sd = seed_mean_sd(B)
    per_seed = [0.25, 0.375, 0.25]
    m = sum(per_seed) / 3  # 0.291666...
    assert mean == pytest.approx(m)
    assert sd == pytest.approx(math.sqrt(sum((x - m) ** 2 for x in per_seed) / 2))  # 0.0721688
    assert sd == pytest.approx(0.07216878)
    assert math.isnan(seed_mean_sd([[1.0, 0.0]])[1])  # one seed: no spread


def test_paired_difference_is_the_mean_of_cell_differences():
    # A - B: [[.5,0,0,.5],[0,.5,0,0],[0,.5,0,.5]] -> sum 2.5 over 12 cells
    iv = paired_bootstrap(A, B, draws=2000, seed=1)
    assert iv.diff == pytest.approx(2.5 / 12)
    assert (iv.seeds, iv.prompts, iv.level) == (3, 4, 0.95)
    assert iv.low <= iv.diff <= iv.high
    assert paired_bootstrap(B, A, draws=2000, seed=1).diff == pytest.approx(-2.5 / 12)


def test_two_way_bootstrap_distribution_matches_the_enumeration():
    """d[s, p] = s + p on 2 seeds x 2 prompts. A draw picks 2 seeds and 2 prompts with replacement, so its mean is
    mean(seeds drawn) + mean(prompts drawn); each is 0, 0.5, 1 with probability 1/4, 1/2, 1/4, and their sum is
    0, .5, 1, 1.5, 2 with probability 1/16, 4/16, 6/16, 4/16, 1/16. The 2.5% and 97.5% quantiles are 0 and 2."""
    d = np.array([[0.0, 1.0], [1.0, 2.0]])
    means = bootstrap_means(d, draws=40_000, seed=7)
    values, counts = np.unique(means, return_counts=True)
    assert values.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    np.testing.assert_allclose(counts / counts.sum(), np.array([1, 4, 6, 4, 1]) / 16, atol=0.01)
    iv = paired_bootstrap(d, np.zeros_like(d), draws=40_000, seed=7)
    assert (iv.diff, iv.low, iv.high) == (1.0, 0.0, 2.0)


def test_seed_resampling_is_part_of_the_interval():
    """Prompts identical within a seed: only seed resampling can move the mean (d = 0 for seed 0, 1 for seed 1)."""
    d = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    values = np.unique(bootstrap_means(d, draws=4000, seed=3))
    assert values.tolist() == [0.0, 0.5, 1.0]  # both seeds 0, one of each, both seeds 1


def test_constant_difference_has_a_degenerate_interval_and_a_sign():
    iv = paired_bootstrap(np.full((3, 5), 0.7), np.full((3, 5), 0.2), draws=500)
    assert (iv.diff, iv.low, iv.high, iv.sign) == pytest.approx((0.5, 0.5, 0.5, 1))
    assert Interval(0.0, -0.1, 0.2, 0.95, 3, 5).sign == 0 and Interval(-0.3, -0.4, -0.1, 0.95, 3, 5).sign == -1
    assert describe(Interval(0.0312, -0.0105, 0.0721, 0.95, 3, 64)) == "+3.1 (95% CI -1.1..+7.2)"


def test_bootstrap_is_reproducible_and_rejects_bad_tables():
    assert paired_bootstrap(A, B, draws=300, seed=5) == paired_bootstrap(A, B, draws=300, seed=5)
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(A, [[0.0]])
    with pytest.raises(ValueError, match="non-empty"):
        seed_mean_sd([1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite"):
        seed_mean_sd([[float("nan")]])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(A, B, level=1.5)


def test_per_prompt_pass_at_k_by_hand():
    # n = 4: c = 0 -> 0; c = 1, k = 2 -> 1 - C(3,2)/C(4,2) = 1/2; c = 2, k = 2 -> 1 - 1/6; c = 3, k = 2 -> 1
    n = np.full((2, 2), 4)
    c = np.array([[0, 1], [2, 3]])
    np.testing.assert_allclose(per_prompt_pass_at_k(n, c, 2), [[0.0, 0.5], [5 / 6, 1.0]])
    np.testing.assert_allclose(per_prompt_pass_at_k(n, c, 1), c / 4)  # Pass@1 = c / n
