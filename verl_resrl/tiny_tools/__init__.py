"""The tiny CPU tool task of the recipe ``resrl_tiny_tools`` (docs/tiny_tools.md).

The arithmetic chains of ``verl_resrl.tiny`` solved with a calculator tool across turns, through verl's own
multi-turn ``ToolAgentLoop`` on the CPU ``hf`` rollout:

- ``task``: transcripts (Hermes ``<tool_call>`` turns, tool messages, ``Answer: N``), verl parquet rows, parsing.
- ``tools``: ``CalcTool``, a verl ``BaseTool`` (seam: ``rollout.multi_turn.tool_config_path``, file ``tools.yaml``).
- ``chat_template``: the tiny tokenizer's ChatML extended to render assistant ``tool_calls`` and ``tool`` messages.
- ``warmstart``: supervised warm start on rendered multi-turn transcripts, and a multi-turn evaluation.
- ``build``: ``ensure_tiny_tools_assets(data_dir)``; ``python -m verl_resrl.tiny_tools.build``.
- ``reward``: ``compute_score`` for ``reward.custom_reward_function``.
- ``trainer_hooks``: per-step tool metrics (``tools/*``) and an optional rollout dump, wired in by the launcher.

Nothing is imported here, so that verl's reward loop and tool registry load single modules cheaply.
"""
