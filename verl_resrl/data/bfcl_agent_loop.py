"""BFCL multi-turn rollouts: verl's tool agent loop executing the model's calls on BFCL's backends, turn after turn.

``BfclMultiTurnAgentLoop`` (registered as ``AGENT_LOOP``) is verl 0.9.1's ``ToolAgentLoop`` -- its state machine,
its Hermes parser (``<tool_call>{json}</tool_call>``), its continuous-token builder merges (``response_mask`` 1 on the
model's tokens, 0 on every tool-output, user-turn and boundary token), its budgets -- with the smallest overrides
that make it play a ``bfcl_multi_turn_base`` row (``verl_resrl.data.bfcl_multi_turn``; docs/bfcl_multi_turn.md,
"Multi-turn rollouts: the agent loop"):

* ``run``: reads the row (``extra_info.user_turns``, ``initial_config``, ``involved_classes``, the ``tools``
  column; errors name the row and the key) and hands the row's tools to verl's loop as its tool schemas, so they
  are rendered in the first prompt and in every merge (verl knows one global tool list only);
* ``_handle_generating_state``: where verl's loop ends because the model made no call, the next user turn is
  appended instead (a ``user`` message merged like a tool message, mask 0) until the last turn is answered;
* ``_handle_processing_tools_state`` / ``_call_tool``: every call of the message runs on the backends. verl's
  tools are independent per call; BFCL's are one stateful world per trajectory, so the calls are executed
  together by **replaying** every call of the trajectory so far in one fresh sandboxed process
  (``function_call_multi_turn.run_calls``, the verifier's own sandbox program, instances and call rules) and
  returning the results of the new ones. The backends are deterministic (seeded generators, private timestamps;
  the verifier relies on the same), so the replay reaches the state the calls left. Cost: one interpreter start
  and backend import per tool message (~0.1-0.3 s on a loaded 2-core CPU) and O(calls^2) call executions per
  trajectory, negligible next to generation; the verifier replays once more to score.

Errors never end the loop: an unknown function, arguments that do not bind, a backend exception become the tool
message (BFCL's ``Error during execution: ...`` text). A replay that times out or dies (memory, CPU) also becomes the
tool message, and then the episode ends: every later replay would repeat that call, and the verifier's replay
cannot get past it either. Over ``max_calls`` calls (the verifier refuses more as ``parse_error``) ends it too.

Options (the verifier's ``MultiTurnOptions`` fields, same meaning; only ``timeout_s`` -- per replay --,
``memory_mb``, ``max_calls``, ``backend_dir`` and ``isolation`` are used): the optional top-level config block
``OPTIONS_KEY``, e.g. ``+resrl_bfcl_agent.timeout_s=20``.

Registration in verl's workers: ``data.custom_cls`` set to this module's ``BfclMultiTurnRLHFDataset`` (the per-row
tools dataset of ``tools_dataset``, unchanged) imports this module where verl's ``AgentLoopWorker`` starts, as
``tools_dataset`` does for ``resrl_row_tools``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import Any

from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import register
from verl.experimental.agent_loop.tool_agent_loop import AgentData, AgentState, ToolAgentLoop
from verl.tools.schemas import ToolResponse

from verl_resrl.data.tools_dataset import ToolsRLHFDataset, row_tools
from verl_resrl.rewards import function_call_multi_turn as mt

AGENT_LOOP = "resrl_bfcl_multi_turn"
DATASET_PATH = "pkg://verl_resrl.data.bfcl_agent_loop"  # data.custom_cls.path
DATASET_NAME = "BfclMultiTurnRLHFDataset"  # data.custom_cls.name
OPTIONS_KEY = "resrl_bfcl_agent"
_CALL_INDEX = re.compile(r"^Error during execution: call \d+: ")  # the replay's index means nothing to the model


@dataclasses.dataclass
class Episode:
    """What the loop needs of one row, validated."""

    where: str  # "row 'multi_turn_base_0' (index 0)": names the row in errors
    user_turns: list[str]  # the text of each turn after the first, as split_turns looks for it
    initial_config: dict
    involved_classes: list[str]
    allowed: list[str]  # the offered function names: the only callable ones
    tools: list[dict]  # the chat template's tools (the row's ``tools`` column)


def _load(value, what: str):
    """A JSON string's object (or the value itself); the error names ``what``."""
    from verl_resrl.rewards.function_call_schema import load_json

    return load_json(value, what)


def read_row(row: dict) -> Episode:
    """The episode of one row (the keyword arguments verl's agent loop gets); errors name the row and the key."""
    info = row.get("extra_info")
    info = info if isinstance(info, dict) else {}
    where = f"row {info.get('source_id', row.get('index'))!r} (index {info.get('index', row.get('index'))!r})"
    if not isinstance(row.get("extra_info"), dict):
        raise ValueError(f"{where}: extra_info is missing or not a dict; a BFCL multi-turn row carries user_turns, "
                         f"initial_config and involved_classes there (verl_resrl.data.bfcl_multi_turn)")
    for key in ("user_turns", "initial_config", "involved_classes"):
        if info.get(key) is None:
            raise ValueError(f"{where}: extra_info.{key} is missing")
    turns = _load(info["user_turns"], f"{where}: extra_info.user_turns")
    if not isinstance(turns, list):
        raise ValueError(f"{where}: extra_info.user_turns must be a list of turns, got {type(turns).__name__}")
    texts = []
    for i, turn in enumerate(turns):
        if not (isinstance(turn, list) and turn and all(
                isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str) for m in turn)):
            raise ValueError(f"{where}: extra_info.user_turns[{i}] must be a non-empty list of "
                             f"{{'role': 'user', 'content': str}} messages")
        texts.append("\n".join(m["content"] for m in turn))  # split_turns' rule; one message a turn in BFCL
    config = _load(info["initial_config"], f"{where}: extra_info.initial_config")
    if not isinstance(config, dict):
        raise ValueError(f"{where}: extra_info.initial_config must be an object, got {type(config).__name__}")
    classes = _load(info["involved_classes"], f"{where}: extra_info.involved_classes")
    if not (isinstance(classes, list) and classes and all(c in mt.BACKEND_FILES for c in classes)):
        raise ValueError(f"{where}: extra_info.involved_classes must be a non-empty list of "
                         f"{sorted(mt.BACKEND_FILES)}, got {classes!r}")
    tools = row_tools(row.get("tools"), where=f"{where}: tools")
    if not tools:
        raise ValueError(f"{where}: tools is missing (the row's functions, rendered in the prompt)")
    from verl_resrl.rewards.function_call_schema import parse_tools

    try:  # BFCL's own docs when the row has them (what the verifier checks), else the template's tools
        allowed = sorted(parse_tools(info.get("tools") or tools))
    except ValueError as exc:
        raise ValueError(f"{where}: extra_info.tools: {exc}") from None
    return Episode(where, texts, config, classes, allowed, tools)


def arguments_of(call) -> dict | str:
    """A parsed call's arguments as a dict, or the error text for the tool message. Arguments given as a JSON
    string are read as the verifier's parser reads them."""
    try:
        args = json.loads(call.arguments)
    except (TypeError, ValueError) as exc:
        return f"Error during execution: the arguments of {call.name!r} are not valid JSON ({exc})"
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass
    if not isinstance(args, dict):
        return f"Error during execution: the arguments of {call.name!r} must be a JSON object"
    return args


def truncate(text: str, limit: int, side: str) -> str:
    """verl's rule for over-long tool output (inline in ``ToolAgentLoop._call_tool``, which this loop replaces)."""
    if len(text) <= limit:
        return text
    if side == "left":
        return "(truncated)..." + text[-limit:]
    if side == "right":
        return text[:limit] + "...(truncated)"
    return text[: limit // 2] + "...(truncated)..." + text[-(limit // 2):]


@register(AGENT_LOOP)
class BfclMultiTurnAgentLoop(ToolAgentLoop):
    """verl's tool agent loop playing one BFCL multi-turn row: backends as tools, the row's later turns as users."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        block = OmegaConf.select(self.config, OPTIONS_KEY, default=None)
        self.options = mt.parse_options(OmegaConf.to_container(block) if block is not None else {})
        # The verifier replays every call written in the text, so every call must run here too, not verl's first
        # ``multi_turn.max_parallel_calls`` (default 1): else the loop's world and the reward's replay part ways.
        self.max_parallel_calls = sys.maxsize
        self.tools, self.tool_schemas = {}, []  # the row's functions replace verl's global tool list (run)

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs):
        """Read the row, then run verl's loop with the row's tools as its tool schemas (one instance a trajectory)."""
        self.episode = read_row(kwargs)
        self.tool_schemas = self.episode.tools  # ToolAgentLoop.run hands these to the first render and each merge
        self.history: list[dict] = []  # every call executed so far, {name: arguments}, in order
        self.turns_fed = 0  # later user turns appended so far
        self.ended: str | None = None  # why the backends cannot go on (the episode ends after this tool message)
        self._results: dict[int, str] = {}
        return await super().run(sampling_params, priority=priority, **kwargs)

    async def _handle_generating_state(self, agent_data: AgentData, sampling_params: dict[str, Any],
                                       ignore_termination: bool = False) -> AgentState:
        """verl's step; where it ends because the message has no call, the next user turn follows, if any."""
        before = len(agent_data.messages)
        state = await super()._handle_generating_state(agent_data, sampling_params, ignore_termination)
        # verl appends the assistant message only past its budget checks: no new message means a budget ended it
        if state != AgentState.TERMINATED or len(agent_data.messages) == before or agent_data.tool_calls:
            return state
        if self.turns_fed >= len(self.episode.user_turns):
            return AgentState.TERMINATED  # the last user turn is answered
        previous = list(agent_data.messages)
        agent_data.messages.append({"role": "user", "content": self.episode.user_turns[self.turns_fed]})
        merge, mask, logprobs = await self.ct_merge_context_msg(
            previous, agent_data.messages, agent_data.prompt_ids, agent_data.response_mask,
            agent_data.response_logprobs or None, tools=self.tool_schemas)
        if len(mask) >= self.response_length:  # as verl treats a tool message that does not fit
            return AgentState.TERMINATED
        agent_data.prompt_ids, agent_data.response_mask = merge.token_ids, mask
        if agent_data.response_logprobs:
            agent_data.response_logprobs = logprobs or []
        agent_data.user_turns += 1  # verl's count of non-model turns (tool rounds and user turns alike)
        self.turns_fed += 1
        return AgentState.GENERATING

    async def _handle_processing_tools_state(self, agent_data: AgentData) -> AgentState:
        """Execute the message's calls in one replay, then verl's step builds the tool messages from the results."""
        calls = agent_data.tool_calls
        args = [arguments_of(call) for call in calls]
        new = [{call.name: a} for call, a in zip(calls, args) if isinstance(a, dict)]
        if len(self.history) + len(new) > self.options.max_calls:
            failure = (f"Error during execution: more than {self.options.max_calls} calls in this episode; "
                       f"the episode ends")
            results, self.ended = [failure] * len(new), failure
        elif new:
            results = await self.loop.run_in_executor(None, self._replay, new)
        else:
            results = []
        produced = iter(results)
        self._results = {id(call): a if isinstance(a, str) else next(produced) for call, a in zip(calls, args)}
        state = await super()._handle_processing_tools_state(agent_data)
        return AgentState.TERMINATED if self.ended else state

    def _replay(self, new: list[dict]) -> list[str]:
        """Every call so far plus ``new`` in a fresh sandboxed process; the results of ``new`` as text."""
        from verl_resrl.data.bfcl_multi_turn import compiled_backends, extract_backends

        ep, opts = self.episode, self.options
        payload = {"modules": compiled_backends(opts.backend_dir or extract_backends()),
                   "extra_paths": mt._extra_paths(),  # noqa: SLF001 - the verifier's sandbox set-up, reused
                   "initial_config": ep.initial_config, "involved_classes": ep.involved_classes,
                   "allowed": ep.allowed, "execute": self.history + new, "new": len(self.history),
                   "keep": self.max_tool_response_length + 1}
        try:
            verdict = mt._sandboxed(payload, opts, opts.timeout_s)  # noqa: SLF001 - the verifier's sandboxed run
        except RuntimeError as exc:  # the backends or this row's initial_config do not load: the data is broken
            raise RuntimeError(f"{ep.where}: {exc}") from exc
        if verdict["reason"] != "executed":  # timed out, or killed by a limit: no state to go on from
            self.ended = f"Error during execution: {verdict['detail']}; the episode ends"
            return [self.ended] * len(new)
        self.history += new
        return [_CALL_INDEX.sub("Error during execution: ", r) for r in verdict["results"]]

    async def _call_tool(self, tool_call, tools_kwargs: dict[str, Any], agent_data: AgentData):
        """The call's result from this message's replay, truncated as verl truncates tool output; no tool reward."""
        text = self._results[id(tool_call)]
        return ToolResponse(text=truncate(text, self.max_tool_response_length, self.tool_response_truncate_side)), \
            None, {}


class BfclMultiTurnRLHFDataset(ToolsRLHFDataset):
    """``ToolsRLHFDataset`` unchanged; naming it in ``data.custom_cls`` imports this module in verl's workers, which
    registers ``resrl_bfcl_multi_turn`` there (verl resolves ``data.custom_cls`` when an AgentLoopWorker starts)."""
