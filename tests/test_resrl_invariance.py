"""ResRL's weights do not depend on how verl cuts the batch.

Unit part: the trainer's whole-group partition and the step diagnostics (coverage), against hand-derived values and
properties over random batches. End-to-end part (``@pytest.mark.e2e``): one real training step of verl's trainer on the
CPU path, repeated under several batch layouts; the per-token weights must agree to 1e-5 and the coverage must be 1.
"""

import random

import pytest
import torch

from verl_resrl.trainer import resrl_step_metrics, whole_group_partition
from verl_resrl.workers.resrl_groups import STATS_COLUMNS


def random_batch(rng, groups, n_choices=(2, 4), pad=0):
    """uids/positive/workloads of a batch: groups of varied size, random signs, plus `pad` all-negative pad rows."""
    uids, positive = [], []
    for g in range(groups):
        for _ in range(rng.choice(n_choices)):
            uids.append(f"g{g}")
            positive.append(rng.random() < 0.5)
    uids += ["pad"] * pad
    positive += [False] * pad
    workloads = [rng.randint(1, 100) for _ in uids]
    return uids, positive, workloads


@pytest.mark.parametrize("balance", [True, False])
@pytest.mark.parametrize("seed", range(20))
def test_partition_is_equal_sized_complete_and_keeps_mixed_groups_whole(seed, balance):
    rng = random.Random(seed)
    k = rng.choice([1, 2, 4])
    uids, positive, workloads = random_batch(rng, rng.randint(k, 12), pad=rng.randint(0, 3))
    while len(uids) % k:
        uids.append("pad"), positive.append(False), workloads.append(1)
    parts, split = whole_group_partition(uids, positive, workloads, k, balance)
    assert sorted(i for p in parts for i in p) == list(range(len(uids)))
    assert {len(p) for p in parts} == {len(uids) // k}
    where = {i: r for r, p in enumerate(parts) for i in p}
    spread = [
        u for u in set(uids)
        if len({positive[i] for i in range(len(uids)) if uids[i] == u}) == 2
        and len({where[i] for i in range(len(uids)) if uids[i] == u}) > 1
    ]
    assert len(spread) == split


def test_partition_hand_derived_lpt():
    """Four mixed groups of 2 rows, loads 10, 9, 2, 1 (per group) on 2 ranks: LPT pairs 10 with 1 and 9 with 2."""
    uids = ["a", "a", "b", "b", "c", "c", "d", "d"]
    positive = [True, False] * 4
    workloads = [5, 5, 1, 1, 4.5, 4.5, 0.5, 0.5]  # a=10, b=2, c=9, d=1
    parts, split = whole_group_partition(uids, positive, workloads, 2, balance=True)
    assert split == 0 and parts == [[0, 1, 6, 7], [2, 3, 4, 5]]
    parts, _ = whole_group_partition(uids, positive, workloads, 2, balance=False)  # first fit, in order
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_partition_splits_only_what_cannot_fit_and_fills_with_unmixed_rows():
    """Three mixed groups of 4 on 2 ranks of 6: one must split; an unmixed group never counts as split."""
    uids = [g for g in "abc" for _ in range(4)]
    positive = [True, False, False, False] * 3
    parts, split = whole_group_partition(uids, positive, [1] * 12, 2)
    assert split == 1
    positive[8:12] = [False] * 4  # group c all negative: a and b whole, c's rows fill the gaps
    parts, split = whole_group_partition(uids, positive, [1] * 12, 2)
    assert split == 0 and sorted(len(p) for p in parts) == [6, 6]
    with pytest.raises(ValueError, match="equal parts"):
        whole_group_partition(uids[:11], positive[:11], [1] * 11, 2)


def stats_rows(flags):
    """STATS_FIELD rows: weighted flag, residual q10/q50/q90, energy share, rank."""
    return torch.tensor([[f, 0.1, 0.2, 0.3, 0.9, 3.0] if f else [0.0] + [float("nan")] * 5 for f in flags])


def test_step_metrics_hand_derived():
    """Group a: mixed, weighted (negative tokens 3 + 2). Group b: mixed, skipped. Group c: all negative."""
    uids = ["a", "a", "a", "b", "b", "c"]
    positive = [True, False, False, True, False, False]
    masks = [torch.ones(4), torch.ones(3), torch.tensor([1.0, 1.0, 0.0]), torch.ones(1), torch.ones(5), torch.ones(2)]
    weights = [torch.ones(4), torch.tensor([0.1, 0.5, 1.0]), torch.tensor([0.3, 0.7, 9.0]), torch.ones(1),
               torch.ones(5), torch.ones(2)]
    stats = stats_rows([1, 1, 1, 0, 0, 0])
    m = resrl_step_metrics(uids, positive, masks, weights, stats, min_pos_tokens=2)
    assert m["resrl/groups_total"] == 3 and m["resrl/groups_mixed"] == 2
    assert m["resrl/groups_weighted"] == 1 and m["resrl/groups_skipped"] == 1
    assert m["resrl/neg_tokens_mixed"] == 10 and m["resrl/neg_tokens_weighted"] == 5
    assert m["resrl/coverage"] == pytest.approx(0.5)
    assert m["resrl/coverage_eligible"] == pytest.approx(1.0)  # b has 1 positive token < min_pos_tokens=2
    assert m["resrl/weight_mean"] == pytest.approx((0.1 + 0.5 + 1.0 + 0.3 + 0.7) / 5)  # masked 9.0 excluded
    assert m["resrl/residual_q50"] == pytest.approx(0.2) and m["resrl/energy_share_mean"] == pytest.approx(0.9)
    assert len(STATS_COLUMNS) == stats.shape[1]


def test_step_metrics_coverage_drops_when_a_mixed_group_lost_its_weights():
    """A split group computed without its positives (the reference code's fault) shows as coverage < 1."""
    uids = ["a", "a", "b", "b"]
    positive = [True, False, True, False]
    masks = [torch.ones(5)] * 4
    stats = stats_rows([1, 1, 1, 0])  # b's negative row was not weighted
    m = resrl_step_metrics(uids, positive, masks, [torch.ones(5)] * 4, stats, min_pos_tokens=2)
    assert m["resrl/coverage"] == pytest.approx(0.5) and m["resrl/coverage_eligible"] == pytest.approx(0.5)
