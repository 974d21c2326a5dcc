"""ScienceWorld (``scienceworld==1.2.3``, Apache-2.0) behind the adapter protocol.

The wheel ships its jar and ``tasks.json``; it needs a Java runtime. One adapter is one JVM (~0.5 GB, 3-6 s to
start), loaded with any task and variation. Task id::

    sciworld:TASK:SPLIT:VARIATION[:SIMPLIFICATIONS]      e.g. sciworld:find-non-living-thing:dev:150

TASK is ScienceWorld's task name (``boil``, ``find-non-living-thing``, ...; 30 tasks), SPLIT one of its official
splits (``train`` / ``dev`` / ``test``: 3592 / 1796 / 1819 variations over the 30 tasks, contiguous ranges per task,
which only the JVM knows: they are asked for after each load and a variation outside its split is refused),
SIMPLIFICATIONS ScienceWorld's own comma-separated list (``easy``, ``openDoors``, ...), none by default.

Score: ScienceWorld's 0-100 score / 100, clipped to [0, 1] (it goes to -100 when the task is failed, e.g. the wrong
thing focused on); success: score 100; done: ScienceWorld's completed flag (success or failure). Admissible
actions: ScienceWorld's valid action-object combinations (~400 a state; each step fetches them anyway).
"""

from __future__ import annotations

import dataclasses
import logging

from verl_resrl.agents.env_adapter import Reset, StepResult, clamp01, kill_wheel_env, tie_to_owner

logger = logging.getLogger(__name__)

KIND = "sciworld"
SPLITS = ("train", "dev", "test")
# ScienceWorld's answer to an action it does not parse (measured with 1.2.3)
INVALID_REPLY = "No known action matches that input."


@dataclasses.dataclass(frozen=True)
class SciWorldTask:
    """One deterministic ScienceWorld episode: task, split, variation, simplifications."""

    task: str
    split: str
    variation: int
    simplifications: str = ""

    @property
    def task_id(self) -> str:
        """The task id of this episode."""
        tail = f":{self.simplifications}" if self.simplifications else ""
        return f"{KIND}:{self.task}:{self.split}:{self.variation}{tail}"


def task_names() -> list[str]:
    """ScienceWorld's 30 task names, from the wheel's ``tasks.json`` (no JVM)."""
    from scienceworld.constants import ID2TASK

    return list(ID2TASK.values())


def sciworld_task_id(task: str, split: str, variation: int, simplifications: str = "") -> str:
    """The task id of one episode (validated as :func:`parse_task_id` validates it)."""
    return parse_task_id(SciWorldTask(task, split, int(variation), simplifications).task_id).task_id


def parse_task_id(task_id: str) -> SciWorldTask:
    """The episode of a ``sciworld:`` task id; ValueError naming the id and what is wrong."""
    parts = task_id.split(":") if isinstance(task_id, str) else []
    if len(parts) not in (4, 5) or parts[0] != KIND:
        raise ValueError(f"ScienceWorld task id {task_id!r} must be 'sciworld:TASK:SPLIT:VARIATION[:SIMPLIFICATIONS]'")
    task, split, variation = parts[1:4]
    if task not in task_names():
        raise ValueError(f"ScienceWorld task id {task_id!r}: unknown task {task!r}; known: {', '.join(task_names())}")
    if split not in SPLITS:
        raise ValueError(f"ScienceWorld task id {task_id!r}: split must be one of {list(SPLITS)}, got {split!r}")
    if not variation.isdigit():
        raise ValueError(f"ScienceWorld task id {task_id!r}: variation must be a non-negative integer")
    return SciWorldTask(task, split, int(variation), parts[4] if len(parts) == 5 else "")


class SciWorldAdapter:
    """One ScienceWorld JVM playing one episode at a time (see the module docstring)."""

    kind = KIND
    invalid_reply = INVALID_REPLY

    def __init__(self):
        from scienceworld import ScienceWorldEnv

        self._env = ScienceWorldEnv("", envStepLimit=10**9)  # our turn budget ends episodes, not ScienceWorld's
        tie_to_owner(self.pid)  # the JVM dies with this process, even when it is SIGKILLed (env_adapter)

    @property
    def pid(self) -> int:
        """The JVM's process id."""
        return self._env._gateway.java_process.pid  # noqa: SLF001 - the wheel keeps its process there

    def split_variations(self, task: str) -> dict[str, list[int]]:
        """The official variations of ``task`` per split (loads the task)."""
        self._env.load(task, 0, "")
        env = self._env
        return {"train": env.get_variations_train(), "dev": env.get_variations_dev(), "test": env.get_variations_test()}

    def reset(self, task_id: str, gold: bool = False) -> Reset:
        """Load and start the episode of ``task_id`` (with ScienceWorld's gold path when ``gold``)."""
        t = parse_task_id(task_id)
        env = self._env
        env.load(t.task, t.variation, t.simplifications, generateGoldPath=gold)
        allowed = {"train": env.get_variations_train, "dev": env.get_variations_dev,
                   "test": env.get_variations_test}[t.split]()
        if t.variation not in allowed:
            raise ValueError(f"ScienceWorld task id {task_id!r}: variation {t.variation} is not in {t.task}'s "
                             f"{t.split} split (its variations {min(allowed)}-{max(allowed)})")
        obs, info = env.reset()
        return Reset(task=env.get_task_description(), observation=obs, admissible=sorted(info["valid"]))

    def gold_actions(self) -> list[str]:
        """ScienceWorld's gold action sequence of the current episode (reset with ``gold=True``)."""
        actions = self._env.get_gold_action_sequence()
        if actions and actions[0].startswith("ERROR"):
            raise RuntimeError(f"ScienceWorld has no gold path for this episode: {actions[0]}")
        return actions

    def step(self, action: str) -> StepResult:
        """Play one action."""
        obs, _, done, info = self._env.step(action)
        score = info["score"]
        return StepResult(observation=obs, score=clamp01(score / 100), done=bool(done), success=score >= 100,
                          admissible=sorted(info["valid"]), invalid=obs.strip() == INVALID_REPLY,
                          info={"moves": info.get("moves"), "raw_score": score})

    def kill(self) -> None:
        """End the JVM at once (dead or hung) without talking to it."""
        kill_wheel_env(self._env)

    def close(self) -> None:
        """End the JVM."""
        self.kill()
