"""The tiny agent task's data: TWX ``twc`` rows (one location, one item, no doors) and gold transcripts.

Rows come from ``verl_resrl.data.agent_envs`` (its ``twx_twc_tiny`` rows with one item to put away: the even seeds
of each fold), so the task ids and the columns are the agent recipes' own; only the system message is shorter
(:data:`INSTRUCTIONS`). A gold transcript is a
TWX gold path played on the real environment and written as the agent loop writes an episode: the row's system
message, the first user turn (``actions.first_message``), then per step the model's ``Action: ...`` turn and the
environment's answer (``actions.observation_message``), up to the winning action.
"""

from __future__ import annotations

from dataclasses import dataclass

from verl_resrl.agents.actions import first_message, observation_message
from verl_resrl.agents.agent_loop import AgentOptions
from verl_resrl.agents.textworld_express import FOLDS, parse_task_id
from verl_resrl.data import agent_envs

DATA_SOURCE = "twx_twc"  # agent_envs' data source: validation logs val-core/twx_twc/acc/mean@1
ITEMS = "numItemsToPutAway=1"  # the one-item games: 2-3 steps without "look around" (4 with it)
# agent_envs' instructions (290 bytes: the action format and every TWX game's command shapes) would be a quarter of
# each episode's tokens at one byte a token and say nothing a 1M-parameter model reads; the task and the admissible
# actions follow in the first user turn anyway
INSTRUCTIONS = "Put the item where it belongs. Reply as: Action: <command>"
ACTION_PREFIX = "Action: "  # the format the rows' instructions ask for (actions.parse_action reads it)


@dataclass(frozen=True)
class AgentTaskConfig:
    """Which games are trained on, validated on, and shown in the warm start."""

    num_val: int = 64  # dev games validated on (the first one-item dev seeds: 10000, 10002, ...)
    num_sft: int = 300  # train games whose gold paths make the warm start (the first one-item train seeds)
    # "look around" opens every gold path and only repeats the first observation (~300-500 tokens): left out of the
    # warm start, episodes are a turn and a third of their tokens shorter; the games are won without it
    skip_look_around: bool = True

    @property
    def num_train(self) -> int:
        """Training rows: every one-item train game (the even seeds of TWX's train fold)."""
        return len(FOLDS["train"][::2])

    def __post_init__(self):
        if not 1 <= self.num_val <= 500:
            raise ValueError(f"AgentTaskConfig.num_val must be in 1..500 (one-item dev games), got {self.num_val!r}")
        if not 1 <= self.num_sft <= 500:
            raise ValueError(f"AgentTaskConfig.num_sft must be in 1..500 (one-item train games), got {self.num_sft!r}")


def one_item(rows: list[dict]) -> list[dict]:
    """The rows whose game has one item to put away, re-indexed from 0 (verl's index is the row's position)."""
    picked = [r for r in rows if ITEMS in r["extra_info"]["task_id"].split(":")[-1].split(",")]
    return [{**r, "extra_info": {**r["extra_info"], "index": i}} for i, r in enumerate(picked)]


def generate_rows(cfg: AgentTaskConfig) -> dict[str, list[dict]]:
    """``train``: every one-item train game (500); ``val``: the first ``cfg.num_val`` one-item dev games; each with
    the short system message :data:`INSTRUCTIONS`."""
    rows = agent_envs.twx_tiny_rows()
    short = [{"role": "system", "content": INSTRUCTIONS}]
    return {"train": [{**r, "prompt": short} for r in one_item(rows["train"])],
            "val": [{**r, "prompt": short} for r in one_item(rows["dev"])[: cfg.num_val]]}


def write_rows(rows: list[dict], path: str) -> None:
    """Write rows with agent_envs' own validating writer."""
    agent_envs.write_agent_rows(rows, path)


def gold_transcript(adapter, row: dict, options: AgentOptions, cfg: AgentTaskConfig) -> list[dict]:
    """The chat messages of the row's gold episode, as the agent loop would build them; the game must be won."""
    task_id = row["extra_info"]["task_id"]
    first = adapter.reset(task_id, gold=True)
    actions = adapter.gold_actions()
    if cfg.skip_look_around and actions and actions[0] == "look around":
        actions = actions[1:]
    messages = list(row["prompt"]) + [{"role": "user", "content": first_message(
        first.task, first.observation, first.admissible, options.max_observation_chars, options.max_admissible_shown)}]
    for i, action in enumerate(actions):
        messages.append({"role": "assistant", "content": ACTION_PREFIX + action})
        result = adapter.step(action)
        if result.done:
            if not result.success or i != len(actions) - 1:
                break
            return messages
        messages.append({"role": "user", "content": observation_message(
            result.observation, result.admissible, options.max_observation_chars, options.max_admissible_shown)})
    raise RuntimeError(f"{task_id}: TWX's gold path {actions} did not end in a won game")


def sft_rows(cfg: AgentTaskConfig) -> list[dict]:
    """The train rows whose gold paths make the warm start: the first ``cfg.num_sft`` one-item train games."""
    rows = generate_rows(cfg)["train"][: cfg.num_sft]
    assert all(parse_task_id(r["extra_info"]["task_id"]).fold == "train" for r in rows)
    return rows
