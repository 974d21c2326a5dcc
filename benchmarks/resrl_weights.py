"""Batched ResRL weights vs a per-group loop, side by side on the same batch; prints the time ratio.

Default shape is the issue's: 256 groups x 4 rollouts x 512 tokens, d = 2560 (Qwen3-4B width), half the rollouts
positive. The per-group loop is the same math with one group per PCA call (``group_chunk=1``), i.e. what a Python
loop over groups costs. Runs unchanged on a GPU (``--device cuda``, default: cuda when available).

    python benchmarks/resrl_weights.py [--groups 256 --n 4 --tokens 512 --dim 2560 --method randomized]
"""

import argparse
import time

import torch

from verl_resrl.algos.resrl import ResRLConfig, resrl_token_weights


def make_batch(groups, n, tokens, dim, device, dtype, seed=0):
    """Random hidden states with a low-rank shared component so that the PCA has structure to find."""
    g = torch.Generator().manual_seed(seed)
    B = groups * n
    basis = torch.randn(32, dim, generator=g)
    coeffs = torch.randn(B, tokens, 32, generator=g)
    hidden = (coeffs @ basis + 0.5 * torch.randn(B, tokens, dim, generator=g)).to(device=device, dtype=dtype)
    lengths = torch.randint(tokens // 2, tokens + 1, (B,), generator=g)
    mask = (torch.arange(tokens)[None, :] < lengths[:, None]).float().to(device)
    positive = (torch.arange(B) % n < n // 2).to(device)
    ids = [i // n for i in range(B)]
    return hidden, mask, ids, positive


def timed(fn, device, repeats):
    """Best wall time of `repeats` runs (after synchronising the device)."""
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", type=int, default=256)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--dim", type=int, default=2560)
    p.add_argument("--method", choices=["randomized", "exact"], default="randomized")
    p.add_argument("--chunk", type=int, default=32, help="groups per batched PCA")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    args = p.parse_args()
    hidden, mask, ids, positive = make_batch(
        args.groups, args.n, args.tokens, args.dim, args.device, getattr(torch, args.dtype)
    )
    batched_cfg = ResRLConfig(pca_method=args.method, group_chunk=args.chunk)
    loop_cfg = ResRLConfig(pca_method=args.method, group_chunk=1)
    t_batched, (w_batched, stats) = timed(
        lambda: resrl_token_weights(hidden, mask, ids, positive, batched_cfg), args.device, args.repeats)
    t_loop, (w_loop, _) = timed(lambda: resrl_token_weights(hidden, mask, ids, positive, loop_cfg), args.device,
                                args.repeats)
    print(f"shape: {args.groups} groups x {args.n} rollouts x {args.tokens} tokens, d={args.dim}, "
          f"{args.dtype} on {args.device}, pca={args.method}, chunk={args.chunk}")
    print(f"negatives weighted: {int(stats['neg_tokens_weighted'])}, coverage {stats['coverage']:.3f}, "
          f"max |w_batched - w_loop| = {(w_batched - w_loop).abs().max().item():.2e}")
    print(f"per-group loop / batched time ratio: {t_loop / t_batched:.2f}x "
          f"(batched {t_batched:.2f}s, loop {t_loop:.2f}s)")


if __name__ == "__main__":
    main()
