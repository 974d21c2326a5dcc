"""ResRL weights: the batched path vs an authors'-style per-group loop, side by side on one batch; prints ratios.

Default shape is the issue's: 256 groups x 4 rollouts x 512 tokens, d = 2560 (Qwen3-4B width), half the rollouts
positive, response lengths uniform in [tokens/2, tokens]. Timed, alternating, best and median of ``--repeats``:

* ``batched``: ``resrl_token_weights`` over all groups (groups sorted by size, ``--chunk`` per batched PCA);
* ``loop``: the paper's description written as a plain per-group Python loop (``paper_loop``, below): per group,
  ``torch.pca_lowrank`` (q = k, 4 power iterations, centred) on the layer-normalised positive tokens, then the
  explicit projection residuals of the negative tokens, ``torch.quantile`` and eq. (3). It is written from the spec,
  not copied from the reference code; it keeps k = min(64, rows - 1, d) whatever the spectrum, as the paper does;
* ``per-group``: ``resrl_token_weights`` called once per group, as the trainer's workers call it;
* ``exact`` (``--with-exact``): the batched path with ``pca_method="exact"``; its weights are the yardstick for the
  randomised ones (max and mean |difference| are printed).

The headline is ``loop / batched``: > 1 means the batched path is faster. Runs unchanged on a GPU
(``--device cuda``; peak memory per path is then printed too). ``--out FILE`` also writes the numbers as JSON.

    python benchmarks/resrl_weights.py [--groups 256 --n 4 --tokens 512 --dim 2560 --method randomized]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when verl_resrl is not installed

from verl_resrl.algos.resrl import ResRLConfig, resrl_token_weights  # noqa: E402


def make_batch(groups, n, tokens, dim, device, dtype, seed=0):
    """Random states with a low-rank shared part (so the PCA has structure), built group by group on the device."""
    g = torch.Generator(device=device).manual_seed(seed)
    basis = torch.randn(32, dim, generator=g, device=device)
    hidden = torch.empty(groups * n, tokens, dim, dtype=dtype, device=device)
    for i in range(groups):  # one group at a time: no float32 copy of the whole batch
        coeffs = torch.randn(n, tokens, 32, generator=g, device=device)
        hidden[i * n:(i + 1) * n] = coeffs @ basis + 0.5 * torch.randn(n, tokens, dim, generator=g, device=device)
    lengths = torch.randint(tokens // 2, tokens + 1, (groups * n,), generator=g, device=device)
    mask = (torch.arange(tokens, device=device)[None, :] < lengths[:, None]).float()
    positive = torch.arange(groups * n, device=device) % n < n // 2
    return hidden, mask, [i // n for i in range(groups * n)], positive


def paper_loop(hidden, mask, ids, positive, cfg: ResRLConfig):
    """The paper's per-group loop: pca_lowrank on a group's positive tokens, residuals and weights of its negatives."""
    d = hidden.shape[-1]
    out = torch.ones(mask.shape, device=hidden.device)
    ln = lambda x: F.layer_norm(x.float(), (d,), eps=1e-5)  # noqa: E731
    rows_of = {}
    for i, g in enumerate(ids):
        rows_of.setdefault(g, []).append(i)
    gen = torch.Generator().manual_seed(cfg.seed)
    for rows in rows_of.values():
        rows = torch.tensor(rows, device=hidden.device)
        pos, neg = rows[positive[rows]], rows[~positive[rows]]
        pos_mask, neg_mask = mask[pos].bool(), mask[neg].bool()
        x = hidden[pos][pos_mask]
        if x.shape[0] > cfg.max_pos_tokens:
            x = x[torch.randperm(x.shape[0], generator=gen)[: cfg.max_pos_tokens].to(x.device)]
        if x.shape[0] < cfg.min_pos_tokens or not neg_mask.any():
            continue
        x = ln(x)
        mu = x.mean(0)
        k = min(cfg.rank, x.shape[0] - 1, d)
        _, _, v = torch.pca_lowrank(x, q=k, center=True, niter=cfg.pca_niter)
        h = ln(hidden[neg][neg_mask]) - mu
        r = (h - (h @ v) @ v.T).pow(2).sum(-1) / d
        lo, hi = torch.quantile(r, torch.tensor([cfg.q_low, cfg.q_high], device=r.device))
        if hi - lo < 1e-5:
            w = torch.full_like(r, (cfg.min_weight + 1) / 2)
        else:
            w = cfg.min_weight + (1 - cfg.min_weight) * ((r - lo) / (hi - lo)).clamp(0, 1)
        block = out[neg]
        block[neg_mask] = w
        out[neg] = block
    return out


def per_group(hidden, mask, ids, positive, cfg: ResRLConfig):
    """resrl_token_weights once per group (as the trainer's workers call it)."""
    out = torch.ones(mask.shape, device=hidden.device)
    n = ids.count(ids[0])
    for s in range(0, len(ids), n):
        out[s:s + n] = resrl_token_weights(hidden[s:s + n], mask[s:s + n], ids[s:s + n], positive[s:s + n], cfg)[0]
    return out


def timed(fn, device):
    """(seconds, result, peak device bytes or None) of one call, synchronising a GPU around it."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, out, torch.cuda.max_memory_allocated() if cuda else None


def host_line(device: str) -> str:
    """What ran it: the device or CPU model, threads, load."""
    if device.startswith("cuda"):
        return f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}"
    cpu = platform.processor() or "cpu"
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
        cpu = f"{names[0]} ({', '.join(f for f in ('avx512f', 'amx_tile') if f in flags) or 'no AVX-512'})"
    except (OSError, IndexError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"device: cpu {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, load avg {load}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", type=int, default=256)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--dim", type=int, default=2560)
    p.add_argument("--method", choices=["randomized", "exact"], default="randomized")
    p.add_argument("--chunk", type=int, default=32, help="groups per batched PCA")
    p.add_argument("--repeats", type=int, default=1, help="alternating rounds; best and median reported")
    p.add_argument("--with-per-group", action="store_true", help="also time one resrl_token_weights call per group")
    p.add_argument("--with-exact", action="store_true", help="also time the exact method and compare weights")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    p.add_argument("--out", help="also write the numbers here (JSON)")
    args = p.parse_args(argv)
    hidden, mask, ids, positive = make_batch(args.groups, args.n, args.tokens, args.dim, args.device,
                                             getattr(torch, args.dtype))
    cfg = ResRLConfig(pca_method=args.method, group_chunk=args.chunk)
    paths = {"batched": lambda: resrl_token_weights(hidden, mask, ids, positive, cfg)[0],
             "loop": lambda: paper_loop(hidden, mask, ids, positive, cfg)}
    if args.with_per_group:
        paths["per-group"] = lambda: per_group(hidden, mask, ids, positive, cfg)
    if args.with_exact:
        exact_cfg = ResRLConfig(pca_method="exact", group_chunk=args.chunk)
        paths["exact"] = lambda: resrl_token_weights(hidden, mask, ids, positive, exact_cfg)[0]
    warm = 2 * args.n  # two groups: the first calls pay one-time set-up (linalg libraries), not what is measured
    for fn in (lambda: resrl_token_weights(hidden[:warm], mask[:warm], ids[:warm], positive[:warm], cfg),
               lambda: paper_loop(hidden[:warm], mask[:warm], ids[:warm], positive[:warm], cfg)):
        fn()
    host_before = host_line(args.device)
    times = {k: [] for k in paths}
    peaks, weights = {}, {}
    for rep in range(args.repeats):
        for name in (list(paths) if rep % 2 == 0 else list(paths)[::-1]):
            seconds, weights[name], peak = timed(paths[name], args.device)
            times[name].append(seconds)
            peaks[name] = max(peaks.get(name) or 0, peak) if peak is not None else None
    report(args, times, peaks, weights, host_before, positive, mask)


def report(args, times, peaks, weights, host_before, positive, mask):
    """Print the report lines (and the JSON file)."""
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    neg = (~positive[:, None] & mask.bool())
    print(f"shape: {args.groups} groups x {args.n} rollouts x {args.tokens} tokens, d={args.dim}, {args.dtype} on "
          f"{args.device}, pca={args.method}, chunk={args.chunk}, repeats={args.repeats} (alternating)")
    print(host_before)
    print(host_line(args.device).replace("device:", "after:"))
    print(f"negative tokens weighted: {int(neg.sum())}")
    diffs = {}
    for other in [k for k in ("loop", "per-group", "exact") if k in weights]:
        d = (weights["batched"] - weights[other])[neg].abs()
        diffs[other] = (d.max().item(), d.mean().item())
        print(f"weights batched vs {other}: max |diff| {diffs[other][0]:.2e}, mean {diffs[other][1]:.2e}")
    for name in times:
        peak = f", peak {peaks[name] / 2**30:.2f} GiB" if peaks.get(name) is not None else ""
        print(f"time {name}: best {best[name]:.3f} s, median {med[name]:.3f} s{peak}")
    ratios = {k: best[k] / best["batched"] for k in times if k != "batched"}
    for name, ratio in ratios.items():
        print(f"{name} / batched time ratio: {ratio:.2f}x (best of {args.repeats}; median {med[name] / med['batched']:.2f}x)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "args": vars(args), "host": host_before, "best_s": best, "median_s": med, "ratios_vs_batched": ratios,
            "peak_bytes": peaks, "weight_diffs_vs_batched": diffs}, indent=2))


if __name__ == "__main__":
    main()
