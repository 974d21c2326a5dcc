"""verl seam: ``verl.tools.base_tool.BaseTool``, loaded by verl's tool registry from ``tools.yaml``.

``actor_rollout_ref.rollout.multi_turn.tool_config_path`` names ``tools.yaml`` (next to this file); verl's
``AgentLoopWorker`` instantiates :class:`CalcTool` from its ``class_name`` and ``ToolAgentLoop._call_tool`` calls
``create`` / ``execute(instance_id, arguments, agent_data=...)`` / ``release`` for every parsed call.

The arithmetic is ``calculator.py`` (one integer operation, regex-parsed, no ``eval``); its errors go back to the
model as text, as verl does for an unknown tool or bad JSON.
"""

from __future__ import annotations

from typing import Any, Optional

from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from verl_resrl.tiny_tools.calculator import calc_response

# per-rollout counters the tool adds to the agent loop's extra_fields: verl stores them with the trajectory (and
# hands them to the reward as extra_info); trainer_hooks.py logs them as tools/calls and tools/errors
CALLS_FIELD = "calc_calls"
ERRORS_FIELD = "calc_errors"


class CalcTool(BaseTool):
    """Stateless integer calculator: ``calc(expr="12-9")`` returns ``3``."""

    def __init__(self, config: dict, tool_schema: Optional[OpenAIFunctionToolSchema]):
        # verl's BaseTool prints the schema as indented JSON at construction (once per agent-loop worker); kept
        super().__init__(config, tool_schema)

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs) -> tuple[ToolResponse, float, dict]:
        """Evaluate the call; count it (and an error) in the trajectory's ``extra_fields``; no step reward."""
        text, ok = calc_response(parameters)
        agent_data = kwargs.get("agent_data")
        if agent_data is not None:
            fields = agent_data.extra_fields
            fields[CALLS_FIELD] = int(fields.get(CALLS_FIELD, 0)) + 1
            fields[ERRORS_FIELD] = int(fields.get(ERRORS_FIELD, 0)) + (0 if ok else 1)
        return ToolResponse(text=text), 0.0, {"ok": ok}
