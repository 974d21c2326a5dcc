"""ResRL vs GRPO at the engine level: one RL step's model work on a random-weight Qwen3, side by side, alternating.

Needs only torch and transformers, plus this checkout's pure ``verl_resrl/algos`` (no verl, Ray or vLLM), so it runs
on a bare GPU host. The model is built locally from a transformers config (``qwen3-1.7b``: Qwen3-1.7B's shape;
``tiny``: a 2-layer toy for the CPU smoke run), random weights, nothing downloaded. Per step, for each estimator:

1. old-log-prob pass: no-grad forward over all rollouts in right-padded micro-batches, response log-probs; ResRL also
   keeps the chosen layer's states of the response tokens (entry ``--layer`` of HF's ``output_hidden_states``, read
   with a hook on that one module: a forward pre-hook on decoder layer i for entry i < L, the final norm's output
   for entry L; the state at position t-1 is the one that produced token t);
2. advantages: GRPO's (group mean, std + 1e-6); ResRL then computes the token weights of every group
   (``resrl_token_weights``, one call per group, as the trainer's workers do) and applies ``apply_resrl``;
3. update: train-mode forward, PPO-clip loss (0.2, dual clip 3, token mean over the step), backward per
   micro-batch, gradient clipping 1.0, AdamW; gradient checkpointing on, as in verl's recipes.

GRPO and ResRL steps alternate (GRPO first on even steps), after one warm-up step each. Reported: median step time
and per-phase medians, peak device memory per step (``torch.cuda.max_memory_allocated``; CUDA only), ratios.

    python benchmarks/gpu_engine_overhead.py --shape qwen3-1.7b --device cuda --out benchmarks/results/gpu_check
    python benchmarks/gpu_engine_overhead.py --shape tiny --device cpu        # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when verl_resrl is not installed

from verl_resrl.algos.resrl import ResRLConfig, apply_resrl, resrl_token_weights  # noqa: E402

SHAPES = {
    # Qwen3-1.7B's config.json (Qwen/Qwen3-1.7B), random init: nothing is downloaded
    "qwen3-1.7b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                       max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, max_position_embeddings=512),
}
PHASES = ("old_log_prob", "advantages", "update")


def build_model(shape: str, device: str, dtype: torch.dtype):
    """A random-weight Qwen3 of the named shape on the device, sdpa attention, gradient checkpointing on."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("qwen3", **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: fast, and no host copy of the weights
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    model.to(dtype)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


class LayerTap:
    """Entry ``index`` of HF ``output_hidden_states`` (L + 1 entries), read from one module while active."""

    def __init__(self, model, index: int):
        layers = model.model.layers
        i = index % (len(layers) + 1)
        self.grabbed: list[torch.Tensor] = []
        if i < len(layers):  # entry i is the input of decoder layer i
            self.handle = layers[i].register_forward_pre_hook(self._pre, with_kwargs=True)
        else:  # entry L is the final norm's output
            self.handle = model.model.norm.register_forward_hook(lambda m, a, out: self.grabbed.append(out))

    def _pre(self, module, args, kwargs):
        """Keep the layer's input hidden states."""
        self.grabbed.append(args[0] if args else kwargs["hidden_states"])

    def remove(self):
        """Detach the hook."""
        self.handle.remove()


def make_rollouts(args, vocab: int):
    """Prompt groups of n rollouts with random tokens; scores +1 / -1, both signs in every group."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for gi in range(args.groups):
        prompt = torch.randint(0, vocab, (args.prompt_len,), generator=g)
        for j in range(args.n):
            r = int(torch.randint(args.response_len // 2, args.response_len + 1, (1,), generator=g))
            rows.append(dict(uid=f"p{gi}", ids=torch.cat([prompt, torch.randint(0, vocab, (r,), generator=g)]),
                             p=args.prompt_len, r=r, score=1.0 if j % 2 == 0 else -1.0))
    return rows


def micro_batches(rows, size: int, device: str):
    """Right-padded micro-batches: (row indices, input_ids, attention_mask)."""
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        width = max(len(x["ids"]) for x in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for j, x in enumerate(chunk):
            ids[j, :len(x["ids"])], mask[j, :len(x["ids"])] = x["ids"], 1
        yield list(range(i, i + len(chunk))), ids.to(device), mask.to(device)


def response_log_probs(logits, ids, rows):
    """Per row, the (r,) log-probs of its response tokens (the logit at position t-1 scores token t)."""
    out = []
    for j, x in enumerate(rows):
        lp = torch.log_softmax(logits[j, x["p"] - 1:x["p"] + x["r"] - 1].float(), -1)
        out.append(lp.gather(-1, ids[j, x["p"]:x["p"] + x["r"], None]).squeeze(-1))
    return out


def grpo_advantages(rows, device: str):
    """Outcome GRPO advantages per row, broadcast over its response tokens."""
    scores = {}
    for x in rows:
        scores.setdefault(x["uid"], []).append(x["score"])
    stats = {u: (torch.tensor(s).mean(), torch.tensor(s).std()) for u, s in scores.items()}
    return [torch.full((x["r"],), float((x["score"] - stats[x["uid"]][0]) / (stats[x["uid"]][1] + 1e-6)),
                       device=device) for x in rows]


def resrl_advantages(rows, hidden, adv, config: ResRLConfig, info: dict):
    """ResRL: token weights per whole group from the captured states, then lambda / w on the advantages."""
    by_group = {}
    for i, x in enumerate(rows):
        by_group.setdefault(x["uid"], []).append(i)
    out = list(adv)
    weighted = 0
    for uid, idx in by_group.items():
        width = max(rows[i]["r"] for i in idx)
        h = hidden[idx[0]].new_zeros(len(idx), width, hidden[idx[0]].shape[-1])
        mask = torch.zeros(len(idx), width, device=h.device)
        for j, i in enumerate(idx):
            h[j, :rows[i]["r"]], mask[j, :rows[i]["r"]] = hidden[i], 1
        positive = torch.tensor([rows[i]["score"] > 0 for i in idx], device=h.device)
        w, stats = resrl_token_weights(h, mask, [uid] * len(idx), positive, config)
        weighted += int(stats["neg_tokens_weighted"])
        a = torch.stack([torch.nn.functional.pad(adv[i], (0, width - rows[i]["r"])) for i in idx])
        a = apply_resrl(a, w, positive, config)
        for j, i in enumerate(idx):
            out[i] = a[j, :rows[i]["r"]]
    info["neg_tokens_weighted"] = weighted
    return out


def rl_step(model, opt, rows, args, use_resrl: bool, sync) -> tuple[dict, dict]:
    """One step; returns (seconds per phase, ResRL info)."""
    seconds, info = {}, {}
    t0 = time.perf_counter()
    old, hidden = [None] * len(rows), [None] * len(rows)
    model.eval()
    tap = LayerTap(model, args.layer) if use_resrl else None
    with torch.no_grad():
        for idx, ids, mask in micro_batches(rows, args.micro_batch, args.device):
            chunk = [rows[i] for i in idx]
            logits = model(input_ids=ids, attention_mask=mask).logits
            for i, lp in zip(idx, response_log_probs(logits, ids, chunk)):
                old[i] = lp
            if tap is not None:
                states = tap.grabbed.pop()
                for j, i in enumerate(idx):  # the state at t-1 produced token t: keep the response's states only
                    hidden[i] = states[j, rows[i]["p"] - 1:rows[i]["p"] + rows[i]["r"] - 1].clone()
            del logits
    if tap is not None:
        tap.remove()
        info["captured_bytes"] = sum(h.numel() * h.element_size() for h in hidden)
    sync()
    seconds["old_log_prob"], t0 = time.perf_counter() - t0, time.perf_counter()
    adv = grpo_advantages(rows, args.device)
    if use_resrl:
        adv = resrl_advantages(rows, hidden, adv, ResRLConfig(), info)
    del hidden
    sync()
    seconds["advantages"], t0 = time.perf_counter() - t0, time.perf_counter()
    total_tokens = sum(x["r"] for x in rows)
    model.train()
    opt.zero_grad(set_to_none=True)
    for idx, ids, mask in micro_batches(rows, args.micro_batch, args.device):
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = 0.0
        for i, lp in zip(idx, response_log_probs(logits, ids, [rows[i] for i in idx])):
            ratio, a = torch.exp(lp - old[i]), adv[i]
            pg = torch.maximum(-a * ratio, -a * ratio.clamp(0.8, 1.2))
            pg = torch.where(a < 0, torch.minimum(pg, -a * 3.0), pg)  # dual clip
            loss = loss + pg.sum() / total_tokens
        loss.backward()
        del logits, loss
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sync()
    seconds["update"] = time.perf_counter() - t0
    return seconds, info


def measure(args) -> dict:
    """Alternate GRPO and ResRL steps on one model; medians, peaks and ratios."""
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model = build_model(args.shape, args.device, dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.1)
    rows = make_rollouts(args, model.config.vocab_size)
    runs = {"grpo": [], "resrl": []}
    for step in range(args.steps + 1):
        for name in ("grpo", "resrl") if step % 2 == 0 else ("resrl", "grpo"):
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            seconds, info = rl_step(model, opt, rows, args, name == "resrl", sync)
            total = time.perf_counter() - t0
            if step > 0:  # step 0 warms up both
                runs[name].append(dict(seconds, step=total, info=info,
                                       peak=torch.cuda.max_memory_allocated() if cuda else None))
    return summarise(args, runs, torch.cuda.get_device_name() if cuda else "cpu", rows)


def summarise(args, runs, device_name, rows) -> dict:
    """Medians per phase and step, peak memory, ratios."""
    med = {k: {p: statistics.median(r[p] for r in v) for p in (*PHASES, "step")} for k, v in runs.items()}
    peak = {k: max(r["peak"] for r in v) if v[0]["peak"] is not None else None for k, v in runs.items()}
    info = runs["resrl"][-1]["info"]
    neg = sum(x["r"] for x in rows if x["score"] <= 0)
    return {
        "shape": args.shape, "layers": SHAPES[args.shape]["num_hidden_layers"], "d": SHAPES[args.shape]["hidden_size"],
        "device": device_name, "args": vars(args), "median_s": med,
        "step_time_ratio": med["resrl"]["step"] / med["grpo"]["step"],
        "peak_memory_bytes": peak, "peak_memory_ratio": peak["resrl"] / peak["grpo"] if peak["grpo"] else None,
        "captured_bytes": info["captured_bytes"], "coverage": info["neg_tokens_weighted"] / neg,
        "samples": {k: len(v) for k, v in runs.items()},
    }


def report(result: dict) -> list[str]:
    """The report lines (the same on CPU and GPU; the CPU has no in-process per-step memory peak)."""
    a, med, peak = result["args"], result["median_s"], result["peak_memory_bytes"]
    lines = [
        f"engine overhead: {result['shape']} ({result['layers']} layers, d={result['d']}), {a['dtype']} on "
        f"{a['device']} ({result['device']}); {a['groups']} groups x {a['n']} rollouts, prompt {a['prompt_len']} + "
        f"response <= {a['response_len']} tokens, micro-batch {a['micro_batch']}, layer {a['layer']}, "
        f"{result['samples']['grpo']} measured steps each (alternating)",
        f"step time: grpo {med['grpo']['step']:.3f} s, resrl {med['resrl']['step']:.3f} s, "
        f"ratio resrl/grpo {result['step_time_ratio']:.3f}",
        *[f"phase {p}: grpo {med['grpo'][p]:.3f} s, resrl {med['resrl'][p]:.3f} s" for p in PHASES],
    ]
    if peak["grpo"] is not None:
        lines.append(f"peak memory: grpo {peak['grpo'] / 2**30:.2f} GiB, resrl {peak['resrl'] / 2**30:.2f} GiB, "
                     f"ratio resrl/grpo {result['peak_memory_ratio']:.3f}")
    else:
        lines.append("peak memory: n/a on cpu (no per-step peak in-process)")
    lines.append(f"resrl: coverage {result['coverage']:.3f}, captured states {result['captured_bytes'] / 2**20:.3f} MiB")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-1.7b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--groups", type=int, default=8, help="prompt groups per step")
    p.add_argument("--n", type=int, default=4, help="rollouts per prompt")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--response-len", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--layer", type=int, default=-2, help="index into HF output_hidden_states (reference: -2)")
    p.add_argument("--steps", type=int, default=3, help="measured steps per estimator (after one warm-up each)")
    p.add_argument("--out", help="directory for engine_overhead_<device>.json")
    args = p.parse_args(argv)
    if args.n < 2 or args.response_len < 8:
        p.error("--n must be >= 2 (both signs per group) and --response-len >= 8 (ResRL needs 4 positive tokens)")
    result = measure(args)
    print("\n".join(report(result)), flush=True)
    if args.out:
        path = Path(args.out) / f"engine_overhead_{args.device.split(':')[0]}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
