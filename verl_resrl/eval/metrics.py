"""Evaluation metrics for n sampled responses per prompt: pure functions (numpy only, no verl import).

Protocol (ResRL paper, following FlowRL): Avg@16 (mean accuracy over 16 samples per prompt) and the unbiased Pass@k
estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code", arXiv 2107.03374, Sec. 2.1) for
k = 1, 2, 4, ..., n. Diversity per prompt: distinct final answers, distinct-n (Li et al. 2016, arXiv 1510.03055) and
the mean token entropy estimated from the sampled tokens' log-probs.

Why not verl's ``best@N``: verl bootstraps (resamples with replacement) and takes the max, which is biased low
(one correct of four gives ~0.68 for best@4 instead of 1.0, verl PR #7240). Pass@k here is exact in expectation.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence

import numpy as np


def _check_int(name: str, value, minimum: int) -> int:
    """Return ``value`` as int, or raise naming ``name`` when it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021).

    Computed in the numerically stable product form 1 - prod_{i=n-c+1}^{n} (1 - k / i), which never forms the huge
    binomials (C(128, 64) ~ 2.4e37 would overflow float64 ratios for larger n).
    """
    n = _check_int("n", n, 1)
    c = _check_int("c", c, 0)
    k = _check_int("k", k, 1)
    if c > n:
        raise ValueError(f"c (correct samples) must be <= n, got c={c}, n={n}")
    if k > n:
        raise ValueError(f"k must be <= n (samples drawn), got k={k}, n={n}")
    if n - c < k:  # every size-k subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_at_k_array(n: Sequence[int] | np.ndarray, c: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Vectorised :func:`pass_at_k` over prompts: per-prompt sample counts ``n`` and correct counts ``c``.

    Each prompt's product runs over at most c factors, laid out as a (prompts x max c) matrix padded with ones, so
    the result is the same product as the scalar form, factor for factor.
    """
    n_arr = np.asarray(n)
    c_arr = np.asarray(c)
    if n_arr.shape != c_arr.shape or n_arr.ndim != 1:
        raise ValueError(f"n and c must be 1-D and of equal length, got shapes {n_arr.shape} and {c_arr.shape}")
    k = _check_int("k", k, 1)
    if n_arr.size == 0:
        return np.zeros(0, dtype=np.float64)
    if not (np.issubdtype(n_arr.dtype, np.integer) and np.issubdtype(c_arr.dtype, np.integer)):
        raise TypeError(f"n and c must hold integers, got dtypes {n_arr.dtype} and {c_arr.dtype}")
    if (c_arr < 0).any() or (c_arr > n_arr).any():
        bad = int(np.flatnonzero((c_arr < 0) | (c_arr > n_arr))[0])
        raise ValueError(f"c must be in [0, n]: prompt {bad} has n={n_arr[bad]}, c={c_arr[bad]}")
    if (n_arr < k).any():
        bad = int(np.flatnonzero(n_arr < k)[0])
        raise ValueError(f"k={k} exceeds the samples of prompt {bad} (n={n_arr[bad]})")
    result = np.ones(n_arr.shape, dtype=np.float64)  # n - c < k: every size-k subset holds a correct sample
    rows = np.flatnonzero(n_arr - c_arr >= k)
    if rows.size:
        n_rows, c_rows = n_arr[rows], c_arr[rows]
        offsets = np.arange(int(c_rows.max()))
        denominators = (n_rows - c_rows + 1)[:, None] + offsets[None, :]  # i = n-c+1 ... n (all > k here)
        factors = np.where(offsets[None, :] < c_rows[:, None], 1.0 - k / denominators, 1.0)
        result[rows] = 1.0 - np.prod(factors, axis=1)
    return result


def default_ks(n: int) -> list[int]:
    """The k values the paper reports: 1, 2, 4, ... up to n, plus n itself when n is not a power of two."""
    n = _check_int("n", n, 1)
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
    return ks if ks[-1] == n else ks + [n]


def avg_at_k(scores: Iterable[float]) -> float:
    """Avg@k: mean correctness over all k samples (of one prompt or pooled); scores are 0/1 or in [0, 1].

    Reward-style scores (e.g. DAPO's +1/-1) must be binarised first (``score > 0``): averaging -1/+1 would not be an
    accuracy, so such values are rejected rather than silently mis-averaged.
    """
    values = np.asarray(list(scores), dtype=np.float64)
    if values.size == 0:
        raise ValueError("avg_at_k needs at least one score, got none")
    if np.isnan(values).any() or (values < 0).any() or (values > 1).any():
        raise ValueError(
            f"avg_at_k expects correctness in [0, 1]; got values in [{values.min()}, {values.max()}] "
            "(binarise reward scores with score > 0 first)"
        )
    return float(values.mean())


def maj_at_k(answers: Sequence[Hashable | None], correct: Sequence[bool | float], k: int | None = None) -> float:
    """maj@k: is the most frequent final answer among the first k samples correct? (1.0 / 0.0).

    Samples without an extracted answer (None or "") do not vote. Ties go to the answer seen first, and the vote's
    correctness is that of the first sample giving the winning answer (the same rule as verl's ``calc_maj_val``).
    The first k of n i.i.d. samples are one unbiased draw of k samples.
    """
    if len(answers) != len(correct):
        raise ValueError(f"answers and correct differ in length: {len(answers)} vs {len(correct)}")
    k = len(answers) if k is None else _check_int("k", k, 1)
    if k > len(answers):
        raise ValueError(f"k={k} exceeds the {len(answers)} samples given")
    votes: dict[Hashable, int] = {}
    first_correct: dict[Hashable, float] = {}
    for answer, ok in zip(answers[:k], correct[:k], strict=True):
        if answer is None or answer == "":
            continue
        votes[answer] = votes.get(answer, 0) + 1
        first_correct.setdefault(answer, float(ok))
    if not votes:
        return 0.0
    winner = max(votes, key=votes.get)  # max keeps the first-inserted among equal counts
    return 1.0 if first_correct[winner] > 0 else 0.0


def distinct_answers(answers: Iterable[Hashable | None]) -> int:
    """Number of distinct extracted final answers among a prompt's samples (None / "" not counted)."""
    return len({a for a in answers if a is not None and a != ""})


def distinct_n(sequences: Iterable[Sequence[Hashable]], n: int) -> float:
    """distinct-n (Li et al. 2016): unique n-grams / total n-grams pooled over a prompt's responses; 0.0 if none."""
    n = _check_int("n", n, 1)
    grams: Counter = Counter()
    for seq in sequences:
        seq = list(seq)
        grams.update(tuple(seq[i : i + n]) for i in range(len(seq) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def mean_token_entropy(log_probs: Iterable[Sequence[float]]) -> float:
    """Token-mean of -log p(sampled token) over all responses: a Monte-Carlo estimate of the per-token entropy.

    E_{t~p}[-log p(t)] = H(p), so this is unbiased for the sampling distribution's mean entropy when the log-probs
    are those of the distribution that sampled the tokens (temperature / top-p applied).
    """
    flat = [float(x) for seq in log_probs for x in seq]
    if not flat:
        raise ValueError("mean_token_entropy needs at least one token log-prob, got none")
    values = np.asarray(flat, dtype=np.float64)
    if np.isnan(values).any() or (values > 1e-6).any():
        raise ValueError(f"log-probs must be <= 0 and not NaN, got max {np.nanmax(values)}")
    return float(-values.mean())


def group_by_uid(uids: Sequence[Hashable], *columns: Sequence) -> dict[Hashable, list[list]]:
    """Group parallel columns by prompt uid, keeping first-seen uid order and sample order."""
    for i, column in enumerate(columns):
        if len(column) != len(uids):
            raise ValueError(f"column {i} has {len(column)} entries but uids has {len(uids)}")
    groups: dict[Hashable, list[list]] = defaultdict(lambda: [[] for _ in columns])
    for row, uid in enumerate(uids):
        for j, column in enumerate(columns):
            groups[uid][j].append(column[row])
    return dict(groups)


def validation_metrics(
    uids: Sequence[Hashable],
    scores: Sequence[float],
    answers: Sequence[Hashable | None] | None = None,
    ks: Sequence[int] | None = None,
) -> dict[str, float]:
    """Turn n validation samples per prompt into Avg@n, unbiased Pass@k (and maj@n, distinct answers) means.

    ``uids`` names the prompt of each sample; ``scores`` are verifier/reward scores, a sample counts as correct iff
    score > 0 (the binary convention; DAPO's +1/-1 and 0/1 both work). Keys: ``avg@{n}``, ``pass@{k}`` for each k
    (default :func:`default_ks` of the smallest group), and with answers ``maj@{n}`` and ``distinct_answers``.
    ``n`` is the smallest group size; when groups differ in size the key is still the smallest n and each group's
    Avg uses all of its samples. Every value is the mean over prompts.
    """
    if len(uids) == 0:
        raise ValueError("validation_metrics needs at least one sample, got none")
    columns = (scores,) if answers is None else (scores, answers)
    groups = group_by_uid(uids, *columns)
    correct = [np.asarray(g[0], dtype=np.float64) > 0 for g in groups.values()]
    n_per = np.array([len(c) for c in correct], dtype=np.int64)
    c_per = np.array([int(c.sum()) for c in correct], dtype=np.int64)
    n_min = int(n_per.min())
    ks = default_ks(n_min) if ks is None else [_check_int("ks[]", k, 1) for k in ks]
    if any(k > n_min for k in ks):
        raise ValueError(f"ks={list(ks)} has k above the smallest group's sample count n={n_min}")
    metrics = {f"avg@{n_min}": float(np.mean([c.mean() for c in correct]))}
    for k in ks:
        metrics[f"pass@{k}"] = float(pass_at_k_array(n_per, c_per, k).mean())
    if answers is not None:
        group_list = list(groups.values())
        metrics[f"maj@{n_min}"] = float(np.mean([maj_at_k(g[1], ok, n_min) for g, ok in zip(group_list, correct)]))
        metrics["distinct_answers"] = float(np.mean([distinct_answers(g[1]) for g in group_list]))
    return metrics

