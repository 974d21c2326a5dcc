"""The study's grid: one training run per (method, seed) with the same budget, plus one eval per final checkpoint
and one of the warm-start model. Pure planning (no subprocess, no verl import); ``execute`` runs the plan.

Layout under ``out_dir``::

    runs/{method}_s{seed}/          resrl_progress.out_dir: metrics.jsonl, progress.png, run.log, train.log
    runs/{method}_s{seed}/ckpt/     trainer.default_local_dir: global_step_{steps}/actor (verl's FSDP checkpoint)
    evals/{method}_s{seed}/         the eval CLI's output_dir (samples/, metrics/, results.json)
    evals/warmstart/                the warm-start model's eval
    heldout.parquet                 the held-out prompts every eval uses (tiny: the in-distribution set)
    heldout_long.parquet            tiny: the second held-out set, unseen 5-operand problems (heldout.py)
    report.md, *.png                the report
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from omegaconf import DictConfig

WARMSTART = "warmstart"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Run:
    """One training run of the grid and where its outputs go."""

    method: str
    seed: int
    recipe: str
    overrides: tuple[str, ...]  # the method's overrides, then the study's common ones (seed, budget, paths)
    run_dir: str
    eval_dir: str
    steps: int

    @property
    def name(self) -> str:
        """``{method}_s{seed}``: the run's folder and experiment name."""
        return f"{self.method}_s{self.seed}"

    @property
    def ckpt_dir(self) -> str:
        """trainer.default_local_dir of the run."""
        return os.path.join(self.run_dir, "ckpt")

    @property
    def actor_dir(self) -> str:
        """The final checkpoint the eval reads (verl saves at the last step: save_freq = steps)."""
        return os.path.join(self.ckpt_dir, f"global_step_{self.steps}", "actor")


@dataclass(frozen=True)
class Plan:
    """The whole grid in run order (seed-major, so a partial study already has every method on the first seed)."""

    out_dir: str
    runs: list[Run] = field(default_factory=list)
    warmstart_eval_dir: str = ""

    def methods(self) -> list[str]:
        """Method names in config order."""
        return list(dict.fromkeys(r.method for r in self.runs))

    def seeds(self) -> list[int]:
        """Seeds in config order."""
        return list(dict.fromkeys(r.seed for r in self.runs))


def _check(cfg: DictConfig) -> None:
    """Clear errors for the keys the plan relies on."""
    if not cfg.get("methods"):
        raise ValueError("study: methods is empty (a mapping NAME: {recipe, overrides})")
    for name, method in cfg.methods.items():
        if not _NAME.match(str(name)) or name == WARMSTART:
            raise ValueError(f"study: method name {name!r} must match [A-Za-z0-9_.-]+ and differ from {WARMSTART!r}")
        if not method.get("recipe") and not cfg.get("recipe"):
            raise ValueError(f"study: methods.{name}.recipe is not set (nor a study-wide recipe)")
    seeds = list(cfg.get("seeds") or [])
    if not seeds or any(not isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"study: seeds must be distinct integers, got {seeds}")
    if not isinstance(cfg.steps, int) or cfg.steps < 1:
        raise ValueError(f"study: steps must be an integer >= 1, got {cfg.steps!r}")


def common_overrides(cfg: DictConfig, run_dir: str, name: str, seed: int) -> list[str]:
    """Seeds, budget and paths every run gets: the same budget for every method, outputs under the study."""
    steps = cfg.steps
    overrides = [
        f"data.seed={seed}",  # the dataloader's shuffle
        f"actor_rollout_ref.rollout.seed={seed}",  # the rollout's sampling stream (hf rollout: seed + replica rank)
        f"trainer.total_training_steps={steps}",
        f"trainer.save_freq={cfg.get('save_freq') or steps}",  # default: one checkpoint, at the last step
        f"trainer.test_freq={cfg.test_freq}",
        f"trainer.experiment_name={name}",
        f"trainer.default_local_dir={os.path.join(run_dir, 'ckpt')}",
        f"resrl_progress.out_dir={run_dir}",
    ]
    if cfg.get("tiny_data_dir"):
        overrides.append(f"resrl_tiny.data_dir={cfg.tiny_data_dir}")
    return overrides + [str(o) for o in cfg.get("overrides") or []]


def plan_study(cfg: DictConfig) -> Plan:
    """Every (method, seed) run, seed-major, with its recipe, overrides and folders."""
    _check(cfg)
    out = os.path.abspath(cfg.out_dir)
    methods = dict(cfg.methods.items())
    if cfg.get("only_methods"):
        unknown = [m for m in cfg.only_methods if m not in methods]
        if unknown:
            raise ValueError(f"study: only_methods names unknown methods {unknown}; known: {list(methods)}")
        methods = {m: methods[m] for m in cfg.only_methods}
    runs = []
    for seed in cfg.seeds:
        for name, method in methods.items():
            run_name = f"{name}_s{seed}"
            run_dir = os.path.join(out, "runs", run_name)
            own = [str(o) for o in (method.get("overrides") or [])]
            runs.append(Run(
                method=str(name), seed=int(seed), recipe=str(method.get("recipe") or cfg.recipe),
                overrides=tuple(own + common_overrides(cfg, run_dir, run_name, int(seed))),
                run_dir=run_dir, eval_dir=os.path.join(out, "evals", run_name), steps=int(cfg.steps),
            ))
    return Plan(out_dir=out, runs=runs, warmstart_eval_dir=os.path.join(out, "evals", WARMSTART))


def describe_plan(plan: Plan) -> list[str]:
    """One line per run: index, name, recipe, seed and its method's overrides."""
    lines = [f"{len(plan.runs)} runs: {len(plan.methods())} methods x {len(plan.seeds())} seeds "
             f"({', '.join(plan.methods())}; seeds {plan.seeds()})"]
    for i, run in enumerate(plan.runs, 1):
        own = [o for o in run.overrides if o.startswith(("algorithm.", "actor_rollout_ref.actor."))]
        lines.append(f"  [{i:2d}] {run.name:<22} recipe={run.recipe:<18} seed={run.seed} {' '.join(own)}")
    return lines
