"""Spec eq. (1)'s basis: the top-k right singular vectors of each group's centred positive tokens, in pure torch.

Each group's X (M tokens x d) is handled on its SMALLER side, m = min(M, d): an eigendecomposition of an m x m
(exact) or L x L (randomised) Gram matrix in float64 replaces an SVD of the M x d matrix ("exact": the SVD's
vectors up to rounding). At M = 768, d = 2560 the full float32 SVD this replaces cost ~9x the float64 Gram route,
and the larger side's QR factorisations, dropped from the randomised power steps, a third of its time.

k stops at the numerical rank: singular values at or below sigma_max * max(M, d) * eps(float32) are rounding noise
of the float32 states and their directions arbitrary; keeping them (spec: k = min(64, rows - 1, d) whatever the
spectrum) made weights jump with 1e-6 changes of the states when the positives span fewer than k dimensions
(correct answers repeat each other's tokens). Float64 Gram matrices resolve singular values down to ~1e-8 sigma_max,
far below that cut, so squaring the matrix loses nothing the cut keeps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS32 = torch.finfo(torch.float32).eps


def subspace_basis(centred: torch.Tensor, counts: torch.Tensor, ranks: torch.Tensor, method: str,
                   niter: int = 4, oversample: int = 8, seeds: list[int] | None = None, max_rank: int | None = None):
    """(G, M, d) zero-padded centred rows, (G,) real rows, (G,) wanted k -> (basis (G, d, K), k used, energy share).

    max_rank (the configured rank; default: the largest wanted k) sets the randomised method's probe count, so that
    a group's result does not depend on which groups share its chunk.

    Columns beyond a group's k are zero, so V V^T is its rank-k projector. The energy share is the fraction of the
    centred positives' squared norm carried by the kept singular values (for the randomised method, by its
    estimates, which are lower bounds).
    """
    G, M, d = centred.shape
    K = int(ranks.max())
    L_cap = (max_rank if max_rank is not None else K) + oversample
    cut = counts.clamp_min(d).double() * EPS32  # per group: sigma / sigma_max at or below this is noise
    if method == "exact":
        basis, sigma = _exact_basis(centred, counts, K, cut)
    elif method == "randomized":
        basis, sigma = _randomized_by_side(centred, counts, K, cut, niter, oversample, seeds or [0] * G, L_cap)
    else:
        raise ValueError(f"subspace_basis: unknown method {method!r} (expected 'exact' or 'randomized')")
    ranks = torch.minimum(ranks, (sigma > sigma[:, :1] * cut[:, None]).sum(1))
    keep = torch.arange(K, device=centred.device)[None, :] < ranks[:, None]
    energy = (sigma.pow(2) * keep).sum(1) / centred.double().pow(2).sum((1, 2)).clamp_min(1e-30)
    return basis * keep[:, None, :], ranks, energy.float()


def _top_singular(gram: torch.Tensor, K: int):
    """Top-K eigenpairs of a symmetric PSD float64 (..., m, m), descending, as (sqrt(eigenvalue), vector)."""
    lam, vec = torch.linalg.eigh(gram)
    k = min(K, gram.shape[-1])
    return lam.flip(-1)[..., :k].clamp_min(0).sqrt(), vec.flip(-1)[..., :k]


def _inverse_above_cut(sigma: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """1 / sigma where sigma is above the noise cut, else 0 (those columns are dropped; 1/noise would overflow)."""
    above = sigma > sigma[..., :1] * cut[..., None]
    return torch.where(above, 1.0 / sigma.clamp_min(1e-300), torch.zeros_like(sigma))


def _exact_basis(x: torch.Tensor, counts: torch.Tensor, K: int, cut: torch.Tensor):
    """Exact top-K right singular vectors per group via the float64 Gram matrix of its smaller side.

    One group at a time (LAPACK runs group by group anyway), without its padding rows, so that the float64 copy is
    one group's (at most max_pos_tokens x d x 8 bytes) and no flop is spent on padding.
    """
    G, _, d = x.shape
    bases, sigmas = [], []
    for g in range(G):
        xg = x[g, : int(counts[g])].double()
        if xg.shape[0] <= d:  # X X^T = U S^2 U^T, V = X^T U S^-1
            sigma, u = _top_singular(xg @ xg.T, K)
            basis = (xg.T @ u) * _inverse_above_cut(sigma, cut[g])
        else:  # X^T X = V S^2 V^T
            sigma, basis = _top_singular(xg.T @ xg, K)
        bases.append(F.pad(basis, (0, K - basis.shape[1])))
        sigmas.append(F.pad(sigma, (0, K - sigma.shape[0])))
    return torch.stack(bases).float(), torch.stack(sigmas)


def _randomized_by_side(x, counts, K, cut, niter, oversample, seeds, L_cap):
    """The randomised basis of each group on its own smaller side: groups with M <= d and with M > d run apart.

    Each group's orientation and probe count L = min(L_cap, M, d) then depend on its own size only (L >= M means
    an exact range), not on the padding its chunk needed.
    """
    G, _, d = x.shape
    basis = x.new_zeros(G, d, K)
    sigma = torch.zeros(G, K, dtype=torch.float64, device=x.device)
    for wide in (True, False):
        idx = ((counts <= d) == wide).nonzero().flatten()
        if idx.numel():
            width = int(counts[idx].max())
            basis[idx], sigma[idx] = _randomized_basis(x[idx, :width], K, cut[idx], niter, L_cap,
                                                       [seeds[i] for i in idx.tolist()])
    return basis, sigma


def _randomized_basis(x: torch.Tensor, K: int, cut: torch.Tensor, niter: int, L_cap: int, seeds: list[int]):
    """Randomised range finder with power iterations (Halko et al. 2011), seeded per group, batched over groups.

    With A the smaller-side orientation of X (X if M <= d, else X^T; m x n, m <= n) and a seeded Gaussian P
    (d x L): Q = qr(X P) if A = X, else qr(X^T (X P)) (a start in R^d that, unlike a probe of the M tokens, does not
    depend on the order of the tokens); then ``niter`` times Q = qr(A (A^T Q)); then B = Q^T A (L x n) and the SVD
    of B from the float64 eigendecomposition of B B^T. Only the m-side block is orthonormalised: the QR of the
    n-side block inside each power step (Halko's Algorithm 4.4, which torch.pca_lowrank does) costs as much as the
    rest of an iteration and guards directions whose singular value is below sqrt(eps32) ~ 3e-4 of the largest
    against rounding; the singular values taken from B are never overestimated (Q Q^T is a projector), so such
    directions can only be dropped or come out rotated among equally weak ones.
    Returns (basis (G, d, K), singular values (G, K)).
    """
    G, M, d = x.shape
    L = min(L_cap, M, d)
    wide = M <= d
    a = x if wide else x.transpose(1, 2)
    probes = torch.stack(
        [torch.randn(d, L, generator=torch.Generator().manual_seed(s), dtype=torch.float32) for s in seeds]
    ).to(x.device)
    q = torch.linalg.qr(x @ probes if wide else a @ (x @ probes)).Q  # (G, m, L): range of A
    for _ in range(niter):
        q = torch.linalg.qr(a @ (a.transpose(1, 2) @ q)).Q
    b = (q.transpose(1, 2) @ a).double()  # (G, L, n): A restricted to its range
    sigma, u = _top_singular(b @ b.transpose(1, 2), K)
    if wide:  # right singular vectors of B: B^T U S^-1
        basis = (b.transpose(1, 2) @ u) * _inverse_above_cut(sigma, cut)[:, None, :]
    else:  # A = X^T: its left singular vectors Q U are X's right ones
        basis = q.double() @ u
    return F.pad(basis, (0, K - basis.shape[-1])).float(), F.pad(sigma, (0, K - sigma.shape[-1]))
