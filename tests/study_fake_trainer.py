"""A stand-in for ``python -m verl_resrl.main_ppo`` in the study's resume test: the outputs a real run leaves.

Reads the overrides the study passes (``trainer.default_local_dir``, ``trainer.total_training_steps``,
``resrl_progress.out_dir``, ``data.seed``), prints verl_resrl's step lines, appends one metrics.jsonl record per step
(sleeping ``FAKE_STEP_SECONDS`` per step, so a test can kill it mid-run; the runs named in ``FAKE_SLOW_RUNS``
sleep ``FAKE_SLOW_STEP_SECONDS``; those in ``FAKE_FAIL_RUNS`` exit 3 after their first step) and at the last step saves a REAL verl FSDP
checkpoint of a tiny model with verl's own ``FSDPCheckpointManager`` (one gloo rank), which the study's eval then
merges with verl's model merger. Each start is appended to ``$FAKE_TRAINER_LOG`` (folder, pid, OMP_NUM_THREADS) so a test can count them.

Also importable: :func:`save_verl_checkpoint` (used by tests/test_eval_checkpoint.py).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time


def save_verl_checkpoint(model, tokenizer, actor_dir: str) -> None:
    """Shard ``model`` with FSDP2 on a 1-rank gloo group and save it as verl's trainer does (model only)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    started = not dist.is_initialized()
    if started:  # a file rendezvous: no port to collide, and no MASTER_* left in os.environ for later subprocesses
        # (an earlier version set MASTER_PORT here; tests calling this in pytest's process leaked a stale port to
        # every later test's children, and one of them failed binding it)
        with tempfile.TemporaryDirectory() as rendezvous:
            dist.init_process_group("gloo", init_method=f"file://{rendezvous}/init", rank=0, world_size=1)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("fsdp",))  # verl's FSDP engine names its mesh so
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        manager = FSDPCheckpointManager(model, optimizer=None, processing_class=tokenizer,
                                        checkpoint_config={"save_contents": ["model"], "load_contents": ["model"]})
        with torch.no_grad():
            manager.save_checkpoint(actor_dir, global_step=0)
    finally:
        if started:
            dist.destroy_process_group()


def _overrides(argv: list[str]) -> dict[str, str]:
    """KEY=VALUE overrides (a leading + dropped)."""
    return {k.lstrip("+"): v for k, _, v in (a.partition("=") for a in argv if "=" in a)}


def main(argv: list[str]) -> int:
    """Simulate a training run's outputs."""
    args = _overrides(argv)
    steps = int(args["trainer.total_training_steps"])
    ckpt_root = args["trainer.default_local_dir"]
    out = args.get("resrl_progress.out_dir") or ckpt_root
    seed = int(args.get("data.seed", 0))
    if os.environ.get("FAKE_TRAINER_LOG"):
        with open(os.environ["FAKE_TRAINER_LOG"], "a") as f:
            f.write(json.dumps({"dir": ckpt_root, "pid": os.getpid(), "omp": os.environ.get("OMP_NUM_THREADS")})
                    + "\n")
    name = args.get("trainer.experiment_name", "")
    step_s = float(os.environ.get("FAKE_STEP_SECONDS", "0"))
    if name in os.environ.get("FAKE_SLOW_RUNS", "").split(","):
        step_s = float(os.environ.get("FAKE_SLOW_STEP_SECONDS", step_s))
    failing = name in os.environ.get("FAKE_FAIL_RUNS", "").split(",")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        for step in range(1, steps + 1):
            time.sleep(step_s)
            record = {"step": step, "critic/score/mean": 0.1 * step, "resrl/weight_mean": 0.5,
                      "val-core/resrl_tiny/arith/acc/mean@1": 0.4 + 0.01 * step}
            f.write(json.dumps(record) + "\n")
            f.flush()
            print(f"[resrl] step {step}/{steps} | reward {0.1 * step:.3f}", flush=True)
            if failing:
                print("fake trainer: failing as FAKE_FAIL_RUNS asks", flush=True)
                return 3
    import torch
    from transformers import AutoTokenizer

    from verl_resrl.tiny.model import build_model
    from verl_resrl.tiny.tokenizer import save_tokenizer

    tok_dir = os.path.join(out, "tokenizer")
    save_tokenizer(tok_dir)
    torch.manual_seed(seed)
    model = build_model()
    model.config.architectures = ["Qwen2ForCausalLM"]  # set by from_pretrained in verl; the merger reads it
    actor = os.path.join(ckpt_root, f"global_step_{steps}", "actor")
    save_verl_checkpoint(model, AutoTokenizer.from_pretrained(tok_dir), actor)
    with open(os.path.join(ckpt_root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(str(steps))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
