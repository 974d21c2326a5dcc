"""Playing the episodes: the trainer's own ``TextEnvAgentLoop`` on one environment pool, with thin recorders of
what the environment was sent and answered, and one JSON record per episode."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verl_resrl.eval.agents.options import InputError, Task
from verl_resrl.eval.agents.policy import Policy, _Batcher, _EpisodeServer


class _RecordingEpisode:
    """The pool's ``Episode`` as the loop uses it, noting the reset and every (action, step result)."""

    def __init__(self, episode):
        self.episode = episode
        self.first = None
        self.steps: list[tuple[str, Any]] = []

    @property
    def invalid_reply(self) -> str:
        return self.episode.invalid_reply

    async def areset(self, gold: bool = False):
        self.first = await self.episode.areset(gold)
        return self.first

    async def astep(self, action: str):
        result = await self.episode.astep(action)
        self.steps.append((action, result))
        return result

    def close(self) -> None:
        self.episode.close()


class _RecordingPool:
    """The process's ``EnvPool``, lending recorded episodes."""

    def __init__(self, pool):
        self.pool = pool
        self.episode: _RecordingEpisode | None = None
        self.invalid_reply: str | None = None

    async def aepisode(self, task_id: str):
        self.episode = _RecordingEpisode(await self.pool.aepisode(task_id))
        self.invalid_reply = self.episode.invalid_reply
        return self.episode


def _eval_loop_class():
    """``TextEnvAgentLoop`` keeping its finished episode (imported late: verl is heavy)."""
    from verl_resrl.agents.agent_loop import TextEnvAgentLoop

    class EvalAgentLoop(TextEnvAgentLoop):
        play = None

        async def _output(self, play, task_id, row):
            self.play = play
            return await super()._output(play, task_id, row)

    return EvalAgentLoop


def _loop_config(cfg: DictConfig, options) -> DictConfig:
    """The keys of verl's trainer config that the loop reads, from ours."""
    return OmegaConf.create({
        "actor_rollout_ref": {"rollout": {"prompt_length": int(cfg.prompt_length),
                                          "response_length": int(cfg.response_length), "full_determinism": False}},
        "data": {"apply_chat_template_kwargs": OmegaConf.to_container(cfg.chat_template_kwargs, resolve=True)},
        "resrl_agent": dataclasses.asdict(options)})


def episode_record(task: Task, episode: int, loop, pool: _RecordingPool, output, options) -> dict:
    """One JSON line: the task, every turn (the model's reply, the action read from it, what the environment said)
    and the outcome, from the loop's own episode state."""
    from verl_resrl.agents.actions import parse_action

    play, rec = loop.play, pool.episode
    info = output.extra_fields["reward_extra_info"]
    replies = [m["content"] for m in play.messages[len(task.row["raw_prompt"]):] if m["role"] == "assistant"]
    env_steps = iter(rec.steps if rec is not None else [])
    steps = []
    for reply in replies:
        action = parse_action(reply, options.max_action_chars)
        if action is None:  # unparsable: never sent; the model was shown the environment's invalid reply
            steps.append({"reply": reply, "action": None, "observation": pool.invalid_reply, "score": None,
                          "done": False, "invalid": True})
            continue
        played = next(env_steps, None)
        if played is None:  # the environment was lost during this step
            steps.append({"reply": reply, "action": action, "observation": None, "score": None, "done": False,
                          "invalid": False})
            continue
        _, result = played
        steps.append({"reply": reply, "action": action, "observation": result.observation, "score": result.score,
                      "done": result.done, "invalid": result.invalid})
    first = rec.first if rec is not None else None
    return {"task_id": task.task_id, "data_source": task.data_source, "file": task.file, "row": task.index,
            "episode": episode, "success": bool(info["agent/success"]), "score": info["agent/score"],
            "reward": output.reward_score, "turns": int(info["agent/turns"]),
            "invalid_actions": int(info["agent/invalid_actions"]), "lost": bool(info["agent/lost"]),
            "end": output.extra_fields["agent_end"], "task": first.task if first else None,
            "first_observation": first.observation if first else None, "steps": steps}


async def _play_all(jobs: list[tuple[Task, int]], cfg: DictConfig, options, policy: Policy, tokenizer,
                    hf_model_type: str | None, sink) -> list[dict]:
    """Play every (task, episode), ``concurrency`` at a time, on one environment pool; records in job order."""
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap

    from verl_resrl.agents.env_pool import EnvPool

    loop_cls = _eval_loop_class()
    loop_cfg = _loop_config(cfg, options)
    env_pool = EnvPool(options.max_envs, options.step_timeout_s, options.reset_timeout_s)
    batcher = _Batcher(policy)
    gate = asyncio.Semaphore(int(cfg.concurrency))
    sampling = {"temperature": float(cfg.sampling.temperature), "top_p": float(cfg.sampling.top_p),
                "top_k": int(cfg.sampling.top_k), "repetition_penalty": 1.0, "logprobs": False}  # as verl's worker

    async def one(task: Task, episode: int) -> dict:
        async with gate:
            server = _EpisodeServer(batcher, task.task_id, episode, int(cfg.sampling.seed))
            loop = loop_cls(trainer_config=DictConfigWrap(loop_cfg), server_manager=server, tokenizer=tokenizer,
                            processor=None, dataset_cls=None, data_config=DictConfigWrap(loop_cfg.data),
                            hf_model_type=hf_model_type, tools=ToolListWrap([]))
            pool = _RecordingPool(env_pool)
            loop.pool = pool
            try:
                output = await loop.run(dict(sampling), **task.row)
            except ValueError as exc:  # the adapter refused the task at its reset (e.g. a variation outside its split)
                raise InputError(f"tasks: {task.file} row {task.index}: {exc}") from None
            record = episode_record(task, episode, loop, pool, output, options)
            record["finish_reasons"] = server.finish_reasons
            sink(record)
            return record

    try:
        return list(await asyncio.gather(*(one(t, e) for t, e in jobs)))
    finally:
        batcher.close()
        env_pool.close()
