"""TextWorldExpress (``textworld-express==1.1.0``, Apache-2.0) behind the adapter protocol.

The wheel ships its simulator jar; it needs a Java runtime. One adapter is one JVM (70-210 MB), reset to any game of
any fold. Task id::

    twx:GAME:FOLD:SEED:PARAMS      e.g. twx:twc:train:17:numLocations=1,numItemsToPutAway=2,includeDoors=0

FOLD is ``train`` / ``dev`` / ``test`` and SEED must lie in that fold's range (TWX itself does NOT reject a seed
outside it: a "dev" game from a train seed would silently leak training games into evaluation). PARAMS is TWX's own
``key=value,...`` string, written in sorted order by :func:`twx_task_id` so that one game has one id.

Score: TWX's ``score`` in [0, 1] (``twc``: a share per item put where it belongs, taken back when put wrong);
success: TWX's ``tasksuccess``; done: ``tasksuccess`` or ``taskfailure``. TWX's own step limit is set out of reach:
the agent loop's turn budget ends episodes.
"""

from __future__ import annotations

import dataclasses
import logging

from verl_resrl.agents.env_adapter import Reset, StepResult, clamp01, kill_wheel_env, tie_to_owner

logger = logging.getLogger(__name__)

KIND = "twx"
GAMES = ("cookingworld", "coin", "twc", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder")
FOLDS = {"train": range(0, 1000), "dev": range(10000, 11000), "test": range(20000, 21000)}
# TWX's answer to an action it does not parse (measured with 1.1.0: the same text for any unknown command)
INVALID_REPLY = "Unknown action: I'm not sure what you mean."
TINY_TWC = {"numLocations": 1, "includeDoors": 0}  # the tiny CPU setting; numItemsToPutAway 1 or 2 per row


@dataclasses.dataclass(frozen=True)
class TwxTask:
    """One deterministic TWX game: game, fold, seed and generation parameters."""

    game: str
    fold: str
    seed: int
    params: str  # TWX's "k=v,k=v" string, keys sorted

    @property
    def task_id(self) -> str:
        """The task id of this game."""
        return f"{KIND}:{self.game}:{self.fold}:{self.seed}:{self.params}"


def _params_text(params: dict) -> str:
    """TWX's parameter string with sorted keys; ValueError on characters that would break the id or TWX's parser."""
    parts = []
    for key in sorted(params):
        value = str(params[key])
        if not str(key).isidentifier() or any(c in value for c in ",=: "):
            raise ValueError(f"TWX parameter {key!r}={value!r}: keys must be identifiers, values without ',=: '")
        parts.append(f"{key}={value}")
    return ",".join(parts)


def twx_task_id(game: str, fold: str, seed: int, **params) -> str:
    """The task id of one TWX game (validated as :func:`parse_task_id` validates it)."""
    return parse_task_id(TwxTask(game, fold, int(seed), _params_text(params)).task_id).task_id


def parse_task_id(task_id: str) -> TwxTask:
    """The game of a ``twx:`` task id; ValueError naming the id and what is wrong (seed outside its fold, ...)."""
    parts = task_id.split(":") if isinstance(task_id, str) else []
    if len(parts) != 5 or parts[0] != KIND:
        raise ValueError(f"TWX task id {task_id!r} must be 'twx:GAME:FOLD:SEED:PARAMS'")
    _, game, fold, seed, params = parts
    if game not in GAMES:
        raise ValueError(f"TWX task id {task_id!r}: unknown game {game!r}; known: {', '.join(GAMES)}")
    if fold not in FOLDS:
        raise ValueError(f"TWX task id {task_id!r}: fold must be one of {sorted(FOLDS)}, got {fold!r}")
    if not seed.isdigit():
        raise ValueError(f"TWX task id {task_id!r}: seed must be a non-negative integer, got {seed!r}")
    span = FOLDS[fold]
    if int(seed) not in span:
        raise ValueError(f"TWX task id {task_id!r}: seed {int(seed)} is outside the {fold} fold's seeds "
                         f"{span.start}-{span.stop - 1} (TWX would not refuse it, and the game would belong to "
                         f"another fold)")
    pairs = [p.partition("=") for p in params.split(",")] if params else []
    if any(not k or not sep or not v for k, sep, v in pairs):
        raise ValueError(f"TWX task id {task_id!r}: PARAMS must be 'key=value,...', got {params!r}")
    return TwxTask(game, fold, int(seed), _params_text({k: v for k, _, v in pairs}))


class TwxAdapter:
    """One TextWorldExpress JVM playing one episode at a time (see the module docstring)."""

    kind = KIND
    invalid_reply = INVALID_REPLY

    def __init__(self):
        from textworld_express import TextWorldExpressEnv

        self._env = TextWorldExpressEnv(envStepLimit=10**9)  # our turn budget ends episodes, not TWX's
        tie_to_owner(self.pid)  # the JVM dies with this process, even when it is SIGKILLed (env_adapter)
        self._loaded: tuple[str, str] | None = None  # (game, params) the JVM has loaded: reloading costs a game build

    @property
    def pid(self) -> int:
        """The JVM's process id."""
        return self._env._gateway.java_process.pid  # noqa: SLF001 - the wheel keeps its process there

    def reset(self, task_id: str, gold: bool = False) -> Reset:
        """Start the game of ``task_id`` (with TWX's gold path when ``gold``)."""
        task = parse_task_id(task_id)
        same = self._loaded == (task.game, task.params)
        obs, info = self._env.reset(seed=task.seed, gameFold=task.fold, gameName=None if same else task.game,
                                    gameParams=None if same else task.params, generateGoldPath=gold)
        self._loaded = (task.game, task.params)
        return Reset(task=info["taskDescription"], observation=obs, admissible=sorted(info["validActions"]))

    def gold_actions(self) -> list[str]:
        """TWX's gold action sequence of the current game (reset with ``gold=True``)."""
        actions = self._env.getGoldActionSequence()
        if actions and actions[0].startswith("ERROR"):
            raise RuntimeError(f"TWX has no gold path for this game: {actions[0]}")
        return actions

    def step(self, action: str) -> StepResult:
        """Play one action."""
        obs, _, _, info = self._env.step(action)
        success, failure = bool(info["tasksuccess"]), bool(info["taskfailure"])
        return StepResult(observation=obs, score=clamp01(info["score"]), done=success or failure, success=success,
                          admissible=sorted(info["validActions"]), invalid=obs.strip() == INVALID_REPLY,
                          info={"moves": info.get("numMoves"), "raw_score": info["score"]})

    def kill(self) -> None:
        """End the JVM at once (dead or hung) without talking to it."""
        kill_wheel_env(self._env)

    def close(self) -> None:
        """End the JVM."""
        self.kill()  # a clean py4j shutdown buys nothing here: the JVM holds no state worth saving
