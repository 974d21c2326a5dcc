"""``python -m verl_resrl.eval.agents``: play agent-task episodes (TextWorldExpress, ScienceWorld) with a model and
report success Avg@n, success Pass@k, mean score, turns, invalid actions and lost episodes.

    python -m verl_resrl.eval.agents model_path=CKPT/global_step_40/actor \\
        'tasks=[data/twx_twc_tiny_dev.parquet]' output_dir=out/agents episodes=4 max_tasks=50

Every episode is played by the trainer's own agent loop, ``TextEnvAgentLoop`` (``verl_resrl.agents.agent_loop``),
instantiated here as verl's ``AgentLoopWorker`` instantiates it, so the message building, the action parsing
(``actions.py``), the turn / token budgets (``AgentOptions``, ``response_length``) and the environment pool
(``env_pool.EnvPool``) are the loop's, not a copy. Only the model behind the loop's ``server_manager.generate``
differs: the eval CLI's own backends (``generation.py``: the transformers engine on CPU, vLLM's offline engine when a
GPU is visible). Two thin wrappers, both outside the loop's file: a subclass that keeps the finished episode's state
(``_output``), and a proxy of the pool's episodes that records what the environment was sent and answered.

Each model turn is sampled with its own seed, derived from (``sampling.seed``, task id, episode, turn): an episode
depends on its task id and index only, not on the order or concurrency of the others. Options:
``verl_resrl/eval/config/eval_agents.yaml`` and docs/evaluation.md ("Agent tasks").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import difflib
import hashlib
import json
import logging
import os
import sys
import time
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger(__name__)

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")
CONFIG_NAME = "eval_agents"
REQUIRED = ("model_path", "tasks", "output_dir")
OPEN_DICTS = ("chat_template_kwargs", "vllm.engine_kwargs")  # free-form: any key may be added
BATCH_WAIT_S = 0.005  # how long the batcher waits for other episodes' turns before it calls the model
EXIT_INPUT = 2  # bad input: nothing was played
EPISODES_FILE, SUMMARY_FILE, TABLE_FILE = "episodes.jsonl", "summary.json", "results.md"


class InputError(ValueError):
    """The user's input is wrong (a file, an option, a row): reported as one line naming it, exit 2."""


# ---------------------------------------------------------------------------------------------------- the policy
@dataclasses.dataclass(frozen=True)
class TurnRequest:
    """One model turn the loop asks for: the conversation so far as token ids, and where it stands."""

    task_id: str
    episode: int  # 0 .. episodes-1
    turn: int  # 0-based model turn within the episode
    prompt_ids: list[int]
    max_tokens: int  # the loop's cap: min(max_tokens_per_turn, what is left of response_length)
    temperature: float
    top_p: float
    top_k: int
    seed: int


class Policy(Protocol):
    """What answers the loop's turns: a model backend, or (in tests) a scripted player."""

    def generate(self, requests: list[TurnRequest]) -> list:
        """One ``GenerationResult`` (``verl_resrl.workers.hf_generation``: new token ids, EOS included) each."""


def turn_seed(base_seed: int, task_id: str, episode: int, turn: int) -> int:
    """A reproducible seed for one model turn, independent of the order the episodes are played in."""
    digest = hashlib.sha256(f"{base_seed}:{task_id}:{episode}:{turn}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31 - 1)


class HFPolicy:
    """The eval CLI's transformers backend (``generation.HFBackend``), one request at a time: each turn is then
    sampled with its own seed exactly (the engine seeds a whole batch with one generator)."""

    def __init__(self, backend):
        self.backend = backend

    def generate(self, requests: list[TurnRequest]) -> list:
        from verl_resrl.eval.generation import SamplingSettings

        out = []
        for r in requests:
            settings = SamplingSettings(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                        max_new_tokens=r.max_tokens, seed=r.seed)
            out.append(self.backend.sample([r.prompt_ids], [1], [r.seed], settings, False)[0][0])
        return out


class VLLMPolicy:
    """vLLM's offline engine (``generation.VLLMBackend``): every waiting turn in one call, each with its own seed
    and token cap (vLLM seeds per request)."""

    def __init__(self, backend):
        self.backend = backend

    def generate(self, requests: list[TurnRequest]) -> list:
        from vllm import SamplingParams

        from verl_resrl.eval.generation import _from_vllm
        from verl_resrl.workers.hf_generation import GenerationResult

        params = [SamplingParams(n=1, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                 max_tokens=r.max_tokens, seed=r.seed) for r in requests]
        outputs = self.backend.llm.generate([{"prompt_token_ids": list(r.prompt_ids)} for r in requests], params,
                                            use_tqdm=False)
        return [_from_vllm(o.outputs[0], False, GenerationResult) for o in outputs]


class _Batcher:
    """Collects the turns that concurrent episodes ask for and hands them to the policy together, on one thread
    (the model is not shared between threads); the environments' steps go on meanwhile."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.pending: list[tuple[TurnRequest, asyncio.Future]] = []
        self.wake = asyncio.Event()
        self.thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="resrl-eval-policy")
        self.task = asyncio.get_running_loop().create_task(self._serve())
        self.calls = 0

    async def submit(self, request: TurnRequest):
        future = asyncio.get_running_loop().create_future()
        self.pending.append((request, future))
        self.wake.set()
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            await asyncio.sleep(BATCH_WAIT_S)
            batch, self.pending = self.pending, []
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self.thread, self.policy.generate, [r for r, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"the policy returned {len(results)} results for {len(batch)} turns")
            except Exception as exc:  # noqa: BLE001 - each waiting episode gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.calls += 1
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    def close(self) -> None:
        self.task.cancel()
        self.thread.shutdown(wait=False)


class _EpisodeServer:
    """verl's server-manager contract (``generate`` -> ``TokenOutput``) for one episode, answered by the batcher."""

    def __init__(self, batcher: _Batcher, task_id: str, episode: int, base_seed: int):
        self.batcher, self.task_id, self.episode, self.base_seed = batcher, task_id, episode, base_seed
        self.turn = 0
        self.finish_reasons: list[str] = []

    async def generate(self, request_id=None, *, prompt_ids, sampling_params, **kwargs):  # noqa: ARG002
        from verl.workers.rollout.replica import TokenOutput

        request = TurnRequest(task_id=self.task_id, episode=self.episode, turn=self.turn, prompt_ids=list(prompt_ids),
                              max_tokens=int(sampling_params["max_tokens"]),
                              temperature=float(sampling_params["temperature"]),
                              top_p=float(sampling_params["top_p"]), top_k=int(sampling_params["top_k"]),
                              seed=turn_seed(self.base_seed, self.task_id, self.episode, self.turn))
        self.turn += 1
        result = await self.batcher.submit(request)
        self.finish_reasons.append(result.finish_reason)
        return TokenOutput(token_ids=list(result.token_ids), log_probs=None, extra_fields={})


# ------------------------------------------------------------------------------------- recording the loop's episode
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


# ------------------------------------------------------------------------------------------------------- the tasks
@dataclasses.dataclass(frozen=True)
class Task:
    """One row of an agent parquet file."""

    file: str
    index: int  # row number in its file
    task_id: str
    data_source: str
    row: dict  # what the loop's run() receives (verl's non-tensor batch fields)


def load_tasks(path: str, max_tasks: int | None) -> list[Task]:
    """The rows of an agent-task file (``python -m verl_resrl.data --only twx_twc_tiny sciworld``), task ids checked
    by their adapters; InputError naming the file, the row and the key otherwise."""
    import pandas as pd

    from verl_resrl.agents import AGENT_LOOP
    from verl_resrl.agents.env_adapter import check_task_id
    from verl_resrl.data.convert import to_python

    if not os.path.isfile(path):
        raise InputError(f"tasks: file not found: {path} (python -m verl_resrl.data --out-dir DIR --only "
                         "twx_twc_tiny sciworld writes agent-task files)")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise InputError(f"tasks: {path} is not a readable parquet file ({type(exc).__name__})") from None
    missing = [c for c in ("prompt", "extra_info", "agent_name") if c not in frame.columns]
    if missing or not len(frame) or set(frame["agent_name"]) != {AGENT_LOOP}:
        why = (f"missing column(s) {missing}" if missing else "no rows" if not len(frame)
               else f"agent_name is {sorted(map(str, set(frame['agent_name'])))}")
        raise InputError(f"tasks: {path} is not an agent-task file ({why}; its rows need agent_name "
                         f"{AGENT_LOOP!r} and extra_info.task_id: python -m verl_resrl.data --only twx_twc_tiny "
                         "sciworld)")
    tasks = []
    for i, record in enumerate(frame.head(max_tasks).to_dict("records") if max_tasks else frame.to_dict("records")):
        row = {k: to_python(v) for k, v in record.items()}
        row["raw_prompt"] = row.pop("prompt")
        row.setdefault("index", i)
        info = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
        try:  # the loop reads the same key (agent_loop.read_task_id) and checks it the same way
            task_id = check_task_id(info.get("task_id"))
        except ValueError as exc:
            raise InputError(f"tasks: {path} row {i}: extra_info.task_id: {exc}") from None
        tasks.append(Task(path, i, task_id, str(row.get("data_source", os.path.basename(path))), row))
    return tasks


# ------------------------------------------------------------------------------------------------------ the options
def check_config(cfg: DictConfig) -> list[str]:
    """The options the run relies on, checked before anything is loaded (no verl import); the task files."""
    for key in REQUIRED:
        if OmegaConf.is_missing(cfg, key):
            raise InputError(f"{key} is required ({key}=...; see docs/evaluation.md, 'Agent tasks')")
    if not os.path.isdir(str(cfg.model_path)):
        raise InputError(f"model_path: not a folder: {cfg.model_path} (an HF model folder or a verl checkpoint "
                         ".../global_step_N/actor)")
    files = [cfg.tasks] if isinstance(cfg.tasks, str) else list(cfg.tasks)
    if not files:
        raise InputError("tasks is empty: give one or more agent-task parquet files")
    for key, minimum in (("episodes", 1), ("concurrency", 1), ("prompt_length", 1), ("response_length", 1)):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise InputError(f"{key} must be an integer >= {minimum}, got {value!r}")
    if cfg.max_tasks is not None and (not isinstance(cfg.max_tasks, int) or cfg.max_tasks < 1):
        raise InputError(f"max_tasks must be null or an integer >= 1, got {cfg.max_tasks!r}")
    if cfg.ks is not None and any(not isinstance(k, int) or not 1 <= k <= cfg.episodes for k in cfg.ks):
        raise InputError(f"ks must be integers in [1, episodes={cfg.episodes}], got {list(cfg.ks)}")
    if cfg.backend not in ("auto", "hf", "vllm"):
        raise InputError(f"backend must be 'auto', 'hf' or 'vllm', got {cfg.backend!r}")
    return files


def check_options(cfg: DictConfig):
    """The loop's own ``AgentOptions`` from ``resrl_agent``, checked by the loop's parser (imports verl)."""
    from verl_resrl.agents.agent_loop import OPTIONS_KEY, parse_options

    try:
        return parse_options(OmegaConf.to_container(cfg.resrl_agent, resolve=True))
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc) if OPTIONS_KEY in str(exc) else f"{OPTIONS_KEY}: {exc}") from None


def unknown_override(argv: list[str], cfg: DictConfig) -> str | None:
    """The error line for a command-line ``KEY=VALUE`` naming no option (with the closest names), or a missing
    required option; None when the command line is fine. Checked before Hydra, whose message is a stack of lines."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # noqa: BLE001 - Hydra's grammar error, shortened to its first line
        return f"cannot read the command line: {str(exc).splitlines()[0]}"
    known = [k for k in _leaf_keys(OmegaConf.to_container(cfg, resolve=False)) if not k.startswith("hydra")]
    given = set()
    for o in parsed:
        key = o.key_or_group
        given.add(key)
        if key.startswith("hydra.") or key == "hydra":
            continue
        if any(key == d or key.startswith(d + ".") for d in OPEN_DICTS):
            continue
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            return f"unknown option {key!r}{hint}; options: verl_resrl/eval/config/eval_agents.yaml"
    for key in REQUIRED:
        if key not in given and OmegaConf.is_missing(cfg, key):
            return f"{key} is required ({', '.join(f'{k}=...' for k in REQUIRED)}; see docs/evaluation.md)"
    return None


def _leaf_keys(node, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        keys = [prefix[:-1]] if prefix else []
        for k, v in node.items():
            keys += _leaf_keys(v, f"{prefix}{k}.")
        return keys
    return [prefix[:-1]]


def default_config(**overrides) -> DictConfig:
    """The config file's defaults with ``overrides`` (dotted keys allowed) merged: the Python entry point."""
    cfg = OmegaConf.load(os.path.join(CONFIG_DIR, f"{CONFIG_NAME}.yaml"))
    cfg.pop("hydra")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


# ------------------------------------------------------------------------------------------------------- playing
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


# ----------------------------------------------------------------------------------------------------- the metrics
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
def _load_model(cfg: DictConfig):
    """(policy, tokenizer, hf_model_type, backend name) of the model: a verl checkpoint is merged first."""
    from transformers import AutoConfig, AutoTokenizer

    from verl_resrl.eval.checkpoint import resolve_model_path
    from verl_resrl.eval.generation import choose_backend

    model_path = resolve_model_path(str(cfg.model_path), str(cfg.output_dir))
    tokenizer_path = cfg.tokenizer_path or model_path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    hf_model_type = getattr(AutoConfig.from_pretrained(model_path), "model_type", None)  # as verl's worker reads it
    backend = choose_backend(str(cfg.backend))
    if backend == "vllm":
        from verl_resrl.eval.generation import VLLMBackend

        policy = VLLMPolicy(VLLMBackend(model_path, tokenizer_path, OmegaConf.to_container(cfg.vllm, resolve=True)))
    else:
        from verl_resrl.eval.generation import HFBackend

        hf = cfg.hf
        policy = HFPolicy(HFBackend(model_path, tokenizer, hf.dtype, hf.device, 1, hf.get("round_weights_to")))
    return policy, tokenizer, hf_model_type, backend


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


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_INPUT)


def main() -> None:
    """The command line: options checked before Hydra composes, input errors as one line (exit 2)."""
    import hydra

    cfg = OmegaConf.load(os.path.join(CONFIG_DIR, f"{CONFIG_NAME}.yaml"))
    problem = unknown_override(sys.argv[1:], cfg)
    if problem:
        _fail(problem)

    @hydra.main(config_path="config", config_name=CONFIG_NAME, version_base=None)
    def run(cfg: DictConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("verl.utils.tokenizer.continuous_token_wiring").setLevel(logging.WARNING)  # one per episode
        try:
            summary = run_agent_eval(cfg)
        except InputError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            _fail(str(err))
        print(summary["table"], end="", flush=True)

    run()


if __name__ == "__main__":
    main()
