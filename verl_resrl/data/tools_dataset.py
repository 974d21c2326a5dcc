"""Per-row tools in the chat template: verl's dataset seam (``data.custom_cls``) plus a single-turn agent loop.

Why this exists: verl 0.9.1 renders a prompt in the agent loop, not in the dataset, and knows one *global* tool list
only (``actor_rollout_ref.rollout.multi_turn.tool_config_path``; ``RLHFDataset.tool_schemas``). Its
``SingleTurnAgentLoop`` passes no tools at all to the chat template, although every non-tensor column of a row --
the BFCL rows' ``tools`` JSON string included (``verl_resrl.data.bfcl``) -- reaches ``AgentLoopBase.run`` as a
keyword argument. BFCL gives every row its own functions, so two small subclasses close the gap:

* ``RowToolsAgentLoop`` (registered as ``AGENT_LOOP``): verl's single-turn loop, with the row's ``tools`` handed to
  the continuous-token builder's first render (``build_initial_tokens(messages, tools=...)``, the same argument
  verl's multi-turn loop uses for its global list). Select it with ``actor_rollout_ref.rollout.agent
  .default_agent_loop=resrl_row_tools``.
* ``ToolsRLHFDataset`` (``data.custom_cls``): counts the row's tools when ``data.filter_overlong_prompts`` drops
  long prompts. verl's filter counts the global list only, and the agent loop left-truncates an overlong prompt,
  which would cut the tool list (it comes first, in the system turn) and leave the question.

Registration: verl's ``AgentLoopWorker`` resolves ``data.custom_cls`` (``get_dataset_class``) when it starts, which
imports this module and so registers the agent loop in every worker process; the recipes set both keys
(``recipes/resrl_bfcl.yaml``). Rows without a ``tools`` value render exactly as ``SingleTurnAgentLoop`` renders them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from verl.experimental.agent_loop.agent_loop import register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.utils.tokenizer import normalize_token_ids
from verl.utils.tokenizer.chat_template import apply_chat_template

AGENT_LOOP = "resrl_row_tools"
DATASET_PATH = "pkg://verl_resrl.data.tools_dataset"  # data.custom_cls.path
DATASET_NAME = "ToolsRLHFDataset"  # data.custom_cls.name
TOOLS_COLUMN = "tools"


def row_tools(value: Any, where: str = "tools") -> list[dict] | None:
    """The chat-template tools of one row: its ``tools`` value (JSON string or list) parsed; None when it has none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):  # a missing cell read through pandas
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except ValueError as err:
            raise ValueError(f"{where}: not valid JSON ({err})") from None
    if hasattr(value, "tolist"):  # numpy object arrays from parquet
        value = value.tolist()
    if not isinstance(value, list) or not all(isinstance(tool, dict) for tool in value):
        raise ValueError(f"{where}: must be a list of tool objects, got {type(value).__name__}")
    return value or None


@register(AGENT_LOOP)
class RowToolsAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn agent loop whose prompt is rendered with the row's own ``tools``."""

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs):
        """Remember the row's tools (one instance serves one trajectory), then run verl's single-turn loop."""
        self._row_tools = row_tools(kwargs.get(TOOLS_COLUMN), where=f"row {kwargs.get('index')!r}: tools")
        return await super().run(sampling_params, priority=priority, **kwargs)

    async def ct_build_initial_tokens(self, messages: list[dict], tools: list[dict] = None, **kwargs) -> list[int]:
        """The first render of the prompt; verl's single-turn loop passes no tools, so the row's are used."""
        if tools is None:
            tools = getattr(self, "_row_tools", None)
        return await super().ct_build_initial_tokens(messages, tools=tools, **kwargs)


class ToolsRLHFDataset(RLHFDataset):
    """verl's ``RLHFDataset`` whose over-long-prompt filter counts each row's own tools."""

    def maybe_filter_out_long_prompts(self, dataframe=None):
        """Drop rows whose rendered prompt (with its tools) exceeds ``data.max_prompt_length``; else verl's filter."""
        has_tools = dataframe is not None and TOOLS_COLUMN in dataframe.column_names
        if not (self.filter_overlong_prompts and has_tools) or self.processor is not None:
            return super().maybe_filter_out_long_prompts(dataframe)  # nothing row-specific to count, or multimodal
        limit = self.max_prompt_length
        before = len(dataframe)
        dataframe = dataframe.filter(lambda doc: self.prompt_length(doc) <= limit, num_proc=self.num_workers,
                                     desc=f"Filtering prompts (with their tools) longer than {limit} tokens")
        print(f"filter dataset len: {len(dataframe)} (dropped {before - len(dataframe)} prompts over {limit} tokens)")
        return dataframe

    def prompt_length(self, doc: dict) -> int:
        """Tokens of a row's prompt as the agent loop renders it: its tools (else verl's global list), generation
        prompt and ``data.apply_chat_template_kwargs``."""
        where = f"{doc.get('data_source')} row {(doc.get('extra_info') or {}).get('index')!r}: tools"
        tools = row_tools(doc.get(TOOLS_COLUMN), where) or self.tool_schemas
        kwargs = dict(self.apply_chat_template_kwargs or {})
        ids = apply_chat_template(self.tokenizer, list(doc[self.prompt_key]), tokenize=True,
                                  add_generation_prompt=True, tools=tools, **kwargs)
        return len(normalize_token_ids(ids))
