"""ResRL's overhead over GRPO, measured side by side in one invocation; prints ratios (ResRL / GRPO).

Two modes:

``--mode model`` (default): the model work of one RL step, with only torch + transformers + this repo's pure modules
(``verl_resrl/algos/resrl.py``, ``workers/resrl_capture.py``, ``workers/resrl_groups.py``; no verl, no Ray), so it
runs on a bare GPU host. A randomly initialised model of the chosen shape (``qwen3-1.7b``: Qwen3-1.7B's config;
``tiny``: a 4-layer toy for a CPU smoke run) does, per step: the no-grad old-log-prob pass over all rollouts in
micro-batches; GRPO advantages; the PPO-clip update (token-mean over the whole mini-batch, gradient accumulation over
micro-batches, gradient checkpointing, AdamW). ResRL adds exactly what the integration adds: the layer hook in the
old-log-prob pass, the whole-group weights, and ``apply_resrl`` on the advantages. GRPO and ResRL steps alternate
(after one warm-up step each); reported: median step time and peak device memory (``torch.cuda.max_memory_allocated``
per step; CUDA only) and their ratios.

    python benchmarks/resrl_overhead.py --shape qwen3-1.7b --device cuda --out benchmarks/results/overhead_h100.json
    python benchmarks/resrl_overhead.py --shape tiny --device cpu        # smoke run

``--mode recipe``: the CPU tiny recipe through verl's real trainer (``python -m verl_resrl.main_ppo
+recipe=resrl_tiny``), with ``algorithm.adv_estimator=grpo`` and with ``resrl``, identical otherwise, ``--repeats``
pairs in alternating order; step times come from verl's ``timing_s/step`` (the run's metrics.jsonl), the first step
(warm-up) excluded. Two ratios: ``step_time_ratio`` (median ResRL step / median GRPO step, side by side; it also
carries the two runs' different rollouts once their policies diverge) and ``attributable_step_time_ratio`` (per ResRL
step: step / (step - ResRL's own seconds), from ``resrl/worker_seconds`` + ``resrl/driver_seconds``, so measured
under one load), and ``per_token_step_time_ratio`` (the same as the first, per token of the step: the two runs'
responses differ in length once their policies diverge). Per-phase medians (``timing_s/*``, ``timing_per_token_ms/*``)
and the token counts of both estimators are recorded too.

    python benchmarks/resrl_overhead.py --mode recipe --steps 10 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SHAPES = {
    # Qwen3-1.7B (config.json of Qwen/Qwen3-1.7B); random init, so no download
    "qwen3-1.7b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                       max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "tiny": dict(vocab_size=512, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32, tie_word_embeddings=True, max_position_embeddings=4096),
}


def import_pure_modules():
    """This repo's pure modules, installed or not (``workers/`` maps to ``verl_resrl.workers`` when installed)."""
    sys.path.insert(0, str(REPO))
    try:
        import verl_resrl.workers.resrl_capture  # noqa: F401
    except ImportError:
        pkg = types.ModuleType("verl_resrl.workers")
        pkg.__path__ = [str(REPO / "workers")]
        sys.modules["verl_resrl.workers"] = pkg
    from verl_resrl.algos import resrl
    from verl_resrl.workers import resrl_capture, resrl_groups

    return resrl, resrl_capture, resrl_groups


def make_rollouts(args, torch, vocab):
    """Random prompts/responses in prompt groups, rewards +1/-1 with both signs in every group."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for gi in range(args.groups):
        prompt = torch.randint(0, vocab, (args.prompt_len,), generator=g)
        for j in range(args.n):
            r = int(torch.randint(args.response_len // 2, args.response_len + 1, (1,), generator=g))
            rows.append(dict(uid=f"p{gi}", ids=torch.cat([prompt, torch.randint(0, vocab, (r,), generator=g)]),
                             p=args.prompt_len, r=r, score=1.0 if j % 2 == 0 else -1.0))
    return rows


def grpo_advantages(rows, torch):
    """Outcome GRPO: (score - group mean) / (group std + 1e-6)."""
    by = {}
    for x in rows:
        by.setdefault(x["uid"], []).append(x["score"])
    out = []
    for x in rows:
        s = torch.tensor(by[x["uid"]])
        out.append(float((x["score"] - s.mean()) / (s.std() + 1e-6)))
    return out


def micro_batches(rows, size, device, torch):
    """Right-padded micro-batches: (indices, input_ids, attention_mask)."""
    for i in range(0, len(rows), size):
        chunk = rows[i : i + size]
        width = max(len(x["ids"]) for x in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for j, x in enumerate(chunk):
            ids[j, : len(x["ids"])], mask[j, : len(x["ids"])] = x["ids"], 1
        yield list(range(i, i + len(chunk))), ids.to(device), mask.to(device)


def response_log_probs(logits, ids, chunk, torch):
    """Per row (r,) log-probs of the response tokens (position t-1 scores token t)."""
    out = []
    for j, x in enumerate(chunk):
        lp = torch.log_softmax(logits[j, x["p"] - 1 : x["p"] + x["r"] - 1].float(), -1)
        out.append(lp.gather(-1, ids[j, x["p"] : x["p"] + x["r"], None]).squeeze(-1))
    return out


def rl_step(model, opt, rows, args, use_resrl, mods, torch):
    """One step: old-log-prob pass (+ capture and weights), advantages (+ modulation), PPO-clip update."""
    resrl, capture, groups = mods
    config = resrl.ResRLConfig()
    old, hidden = [None] * len(rows), [None] * len(rows)
    tap = capture.LayerTap(model, -2) if use_resrl else None
    model.eval()
    with torch.no_grad():
        for idx, ids, mask in micro_batches(rows, args.micro_batch, args.device, torch):
            chunk = [rows[i] for i in idx]
            if use_resrl:
                with tap.capture() as grabbed:
                    logits = model(input_ids=ids, attention_mask=mask).logits
                seq = torch.tensor([len(x["ids"]) for x in chunk])
                flat = capture.flatten_padded(grabbed[0], seq)
                for i, h in zip(idx, capture.response_slices(flat, seq, torch.tensor([x["r"] for x in chunk]))):
                    hidden[i] = h
            else:
                logits = model(input_ids=ids, attention_mask=mask).logits
            for i, lp in zip(idx, response_log_probs(logits, ids, chunk, torch)):
                old[i] = lp
            del logits
    adv = [torch.full((x["r"],), a, device=args.device) for x, a in zip(rows, grpo_advantages(rows, torch))]
    if use_resrl:
        records = [groups.RowRecord(x["uid"], groups.content_key(x["ids"][x["p"]:]), x["score"] > 0, hidden[i],
                                    torch.ones(x["r"], device=args.device), (0, i)) for i, x in enumerate(rows)]
        weights = groups.shard_weight_fields(records, config)[groups.WEIGHTS_FIELD].unbind()
        del hidden, records
        adv = [resrl.apply_resrl(a[None], w[None].to(a.device), torch.tensor([x["score"] > 0], device=a.device),
                                 config)[0] for a, w, x in zip(adv, weights, rows)]
    total_tokens = sum(x["r"] for x in rows)
    model.train()
    opt.zero_grad(set_to_none=True)
    for idx, ids, mask in micro_batches(rows, args.micro_batch, args.device, torch):
        chunk = [rows[i] for i in idx]
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = 0.0
        for i, lp in zip(idx, response_log_probs(logits, ids, chunk, torch)):
            ratio = torch.exp(lp - old[i])
            a = adv[i]
            pg = torch.maximum(-a * ratio, -a * ratio.clamp(0.8, 1.2))
            pg = torch.where(a < 0, torch.minimum(pg, -a * 3.0), pg)
            loss = loss + pg.sum() / total_tokens
        loss.backward()
        del logits, loss
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def peak_memory(torch, device):
    """Peak device memory of the step (CUDA); None on CPU, where no per-step peak is measurable in-process."""
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else None


def model_mode(args):
    """Alternate GRPO and ResRL steps on one model; report medians and ratios."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    mods = import_pure_modules()
    cfg = AutoConfig.for_model("qwen3", **SHAPES[args.shape])
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).to(args.device)
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.1)
    rows = make_rollouts(args, torch, cfg.vocab_size)
    times = {"grpo": [], "resrl": []}
    peaks = {"grpo": [], "resrl": []}
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for step in range(args.steps + 1):
        for name in ("grpo", "resrl") if step % 2 == 0 else ("resrl", "grpo"):
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            rl_step(model, opt, rows, args, name == "resrl", mods, torch)
            sync()
            if step > 0:  # step 0 warms up both
                times[name].append(time.perf_counter() - t0)
                peaks[name].append(peak_memory(torch, args.device))
    return summarise(args, times, peaks, device_name=torch.cuda.get_device_name() if args.device.startswith("cuda")
                     else "cpu")


RECIPE_ARGS = ("mode", "steps", "recipe", "repeats", "timeout", "out", "overrides")  # what recipe mode reads


def summarise(args, times, peaks, device_name):
    med = {k: statistics.median(v) for k, v in times.items()}
    peak = {k: max(v) if v and None not in v else None for k, v in peaks.items()}
    return {
        "mode": args.mode, "shape": args.shape if args.mode == "model" else None, "device": device_name,
        "args": {k: v for k, v in vars(args).items() if args.mode == "model" or k in RECIPE_ARGS},
        "step_time_s": med, "step_time_ratio": med["resrl"] / med["grpo"],
        "peak_memory_bytes": peak, "peak_memory_ratio": peak["resrl"] / peak["grpo"] if peak["grpo"] else None,
        "samples": {k: len(v) for k, v in times.items()},
    }


def recipe_run(estimator, args, workdir):
    """One CPU tiny-recipe training run; returns its per-step metric records (first step = warm-up, dropped)."""
    out_dir = Path(workdir) / estimator
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    ray_tmp = tempfile.mkdtemp(prefix="rb_", dir="/tmp")  # private Ray instance (short path: socket name limit)
    cmd = [sys.executable, "-m", "verl_resrl.main_ppo", f"+recipe={args.recipe}",
           f"algorithm.adv_estimator={estimator}", f"trainer.total_training_steps={args.steps}",
           "trainer.logger=[console]", "trainer.val_before_train=false", "trainer.test_freq=-1",
           "trainer.save_freq=-1", f"trainer.default_local_dir={out_dir}", f"+ray_kwargs.ray_init._temp_dir={ray_tmp}",
           *args.overrides]
    subprocess.run(cmd, check=True, timeout=args.timeout, cwd=workdir, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if "timing_s/step" in r][1:]


def phase_medians(records) -> dict[str, float]:
    """Median of every verl phase timing and of ResRL's own seconds over the measured steps."""
    keys = sorted({k for r in records for k in r
                   if k.startswith(("timing_s/", "timing_per_token_ms/")) or k.endswith("_seconds")
                   or k in ("response_length/mean", "perf/total_num_tokens")})
    return {k: statistics.median(r[k] for r in records if k in r) for k in keys}


def recipe_mode(args):
    """GRPO and ResRL on the CPU tiny recipe, identical but for the estimator, alternating ``--repeats`` times.

    Besides the side-by-side ratio (sensitive to whatever else runs on the host between the runs), the ResRL run
    reports the seconds its own code took inside the step (``resrl/worker_seconds``: capture + weights on the
    slowest rank; ``resrl/driver_seconds``: re-partition + diagnostics), so ``attributable_step_time_ratio`` =
    step / (step - those seconds) is measured under one and the same load.
    """
    runs = {"grpo": [], "resrl": []}
    with tempfile.TemporaryDirectory(prefix="resrl_overhead_") as workdir:
        for repeat in range(args.repeats):
            for name in ("grpo", "resrl") if repeat % 2 == 0 else ("resrl", "grpo"):
                runs[name] += recipe_run(name, args, Path(workdir) / f"{repeat}")
    result = summarise(args, {k: [r["timing_s/step"] for r in v] for k, v in runs.items()},
                       {"grpo": [None], "resrl": [None]}, device_name="cpu")
    result["phases_s"] = {name: phase_medians(records) for name, records in runs.items()}
    per_token = {k: statistics.median(r["timing_s/step"] / r["perf/total_num_tokens"] for r in v)
                 for k, v in runs.items()}
    result["per_token_step_time_ratio"] = per_token["resrl"] / per_token["grpo"]
    own = [r.get("resrl/worker_seconds", 0.0) + r.get("resrl/driver_seconds", 0.0) for r in runs["resrl"]]
    result["attributable_step_time_ratio"] = statistics.median(
        r["timing_s/step"] / (r["timing_s/step"] - s) for r, s in zip(runs["resrl"], own)
    )
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["model", "recipe"], default="model")
    p.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-1.7b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--groups", type=int, default=8, help="prompt groups per step")
    p.add_argument("--n", type=int, default=4, help="rollouts per prompt")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--response-len", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=4, help="measured steps per variant (model) / training steps (recipe)")
    p.add_argument("--recipe", default="resrl_tiny")
    p.add_argument("--repeats", type=int, default=2, help="recipe mode: GRPO/ResRL run pairs (order alternates)")
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--out", help="also write the JSON result here")
    p.add_argument("overrides", nargs="*", help="recipe mode: extra Hydra overrides for both runs")
    args = p.parse_args(argv)
    result = model_mode(args) if args.mode == "model" else recipe_mode(args)
    print(json.dumps({k: v for k, v in result.items() if k != "args"}, indent=2))
    print(f"step-time ratio ResRL/GRPO: {result['step_time_ratio']:.3f}")
    if "per_token_step_time_ratio" in result:
        print(f"per-token step-time ratio (step seconds / tokens in the step): "
              f"{result['per_token_step_time_ratio']:.4f}")
    if "attributable_step_time_ratio" in result:
        print(f"attributable step-time ratio (ResRL's own seconds inside its steps): "
              f"{result['attributable_step_time_ratio']:.4f}")
    if result["peak_memory_ratio"] is not None:
        print(f"peak-memory ratio ResRL/GRPO: {result['peak_memory_ratio']:.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
