"""The agent eval's run: play every (task, episode), then the metrics (success Avg@n, Pass@k, score, turns,
invalid actions, lost episodes) per task, per data source and overall, written as JSON and markdown."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time

from omegaconf import DictConfig, OmegaConf

from verl_resrl.eval.agents.episodes import _play_all
from verl_resrl.eval.agents.options import InputError, Task, check_config, check_options, load_tasks
from verl_resrl.eval.agents.policy import Policy, _load_model

logger = logging.getLogger(__name__)

EPISODES_FILE, SUMMARY_FILE, TABLE_FILE = "episodes.jsonl", "summary.json", "results.md"




def group_metrics(records: list[dict], n: int, ks: list[int]) -> dict:
    """Success Avg@n, success Pass@k (unbiased, per task, then the mean over tasks), mean score, mean turns,
    invalid actions per episode and lost episodes over ``records`` (n episodes of each task)."""
    from verl_resrl.eval.metrics import pass_at_k

    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["task_id"], []).append(r)
    for task_id, rs in by_task.items():
        if len(rs) != n:
            raise RuntimeError(f"task {task_id!r} has {len(rs)} episodes, expected {n}")
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else 0.0  # noqa: E731
    out = {"tasks": len(by_task), "episodes": len(records), "n": n,
           f"success_avg@{n}": mean([r["success"] for r in records])}
    for k in ks:
        out[f"success_pass@{k}"] = mean([pass_at_k(n, sum(r["success"] for r in rs), k) for rs in by_task.values()])
    out.update({"mean_score": mean([r["score"] for r in records]), "mean_turns": mean([r["turns"] for r in records]),
                "invalid_actions_per_episode": mean([r["invalid_actions"] for r in records]),
                "invalid_actions": int(sum(r["invalid_actions"] for r in records)),
                "lost_episodes": int(sum(r["lost"] for r in records))})
    return out


def markdown_table(groups: dict[str, dict], n: int, ks: list[int]) -> str:
    """Rows: the groups (tasks, data sources, overall); success and Pass@k in percent."""
    head = ["", f"success Avg@{n}", *[f"Pass@{k}" for k in ks], "mean score", "mean turns", "invalid / episode",
            "lost", "episodes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in groups.items():
        cells = [name, f"{100 * m[f'success_avg@{n}']:.1f}", *[f"{100 * m[f'success_pass@{k}']:.1f}" for k in ks],
                 f"{m['mean_score']:.3f}", f"{m['mean_turns']:.1f}", f"{m['invalid_actions_per_episode']:.2f}",
                 str(m["lost_episodes"]), str(m["episodes"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_json(obj, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------- the run


def default_run_name(model_path: str) -> str:
    from verl_resrl.eval.runner import default_run_name as name

    return name(model_path)


def run_agent_eval(cfg: DictConfig, policy: Policy | None = None, tokenizer=None,
                   hf_model_type: str | None = None) -> dict:
    """Play ``episodes`` episodes of every task, write episodes.jsonl, summary.json and results.md; the summary.
    ``policy`` / ``tokenizer`` stand in for the model (tests); by default both come from ``model_path``."""
    from verl_resrl.eval.metrics import default_ks

    files = check_config(cfg)
    tasks = [t for path in files for t in load_tasks(path, cfg.max_tasks)]
    options = check_options(cfg)
    seen: dict[str, Task] = {}
    for t in tasks:
        if t.task_id in seen:
            first = seen[t.task_id]
            raise InputError(f"tasks: task {t.task_id!r} appears twice ({first.file} row {first.index}, {t.file} row "
                             f"{t.index}): each task is one group of episodes")
        seen[t.task_id] = t
    n = int(cfg.episodes)
    ks = [int(k) for k in cfg.ks] if cfg.ks is not None else default_ks(n)
    os.makedirs(cfg.output_dir, exist_ok=True)
    for name in (EPISODES_FILE, SUMMARY_FILE, TABLE_FILE):  # an earlier run's results never pass for this one's
        if os.path.exists(os.path.join(cfg.output_dir, name)):
            os.remove(os.path.join(cfg.output_dir, name))
    backend = "given"
    if policy is None:
        policy, tokenizer, hf_model_type, backend = _load_model(cfg)
    logger.info("agent eval: %d tasks x %d episodes, backend %s", len(tasks), n, backend)
    jobs = [(t, e) for t in tasks for e in range(n)]
    path = os.path.join(cfg.output_dir, EPISODES_FILE)
    start = time.monotonic()
    done = [0]
    with open(path + ".partial", "w") as partial:  # lines as episodes finish (what a killed run leaves)

        def sink(record: dict) -> None:
            partial.write(json.dumps(record) + "\n")
            partial.flush()
            done[0] += 1
            if done[0] % max(1, len(jobs) // 10) == 0 or done[0] == len(jobs):
                logger.info("agent eval: %d / %d episodes (%.0f s)", done[0], len(jobs), time.monotonic() - start)

        records = asyncio.run(_play_all(jobs, cfg, options, policy, tokenizer, hf_model_type, sink))
    with open(path + ".tmp", "w") as f:  # in task order, episode order: the same file for the same run
        for record in records:
            f.write(json.dumps(record) + "\n")
    os.replace(path + ".tmp", path)
    os.remove(path + ".partial")
    groups = {t.task_id: group_metrics([r for r in records if r["task_id"] == t.task_id], n, ks) for t in tasks}
    sources = sorted({t.data_source for t in tasks})
    by_source = {s: group_metrics([r for r in records if r["data_source"] == s], n, ks) for s in sources}
    overall = group_metrics(records, n, ks)
    run_name = cfg.run_name or default_run_name(str(cfg.model_path))
    short = {**({f"all {s}": m for s, m in by_source.items()} if len(sources) > 1 else {}), "overall": overall}
    table = markdown_table(short, n, ks)
    with open(os.path.join(cfg.output_dir, TABLE_FILE), "w") as f:
        f.write(f"# {run_name}: agent episodes\n\n{table}\n## Per task\n\n{markdown_table(groups, n, ks)}")
    summary = {"run_name": run_name, "backend": backend, "seconds": round(time.monotonic() - start, 1),
               "overall": overall, "data_sources": by_source, "tasks": groups,
               "config": {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"},
               "agent_options": dataclasses.asdict(options), "files": {"episodes": path}}
    _write_json(summary, os.path.join(cfg.output_dir, SUMMARY_FILE))
    summary["table"] = table
    return summary
