"""The tiny, self-contained task of the CPU recipe ``resrl_tiny`` (docs/tiny_task.md).

- ``tokenizer``: byte-level ChatML tokenizer that survives transformers 5's Qwen2Tokenizer conversion.
- ``model``: ~1M-parameter Qwen2 causal LM (sdpa, fp32), built in code.
- ``task``: seeded arithmetic problems (``resrl_tiny/arith``) and their verl parquet rows.
- ``warmstart``: the supervised warm start and the accuracy measurement.
- ``build``: ``ensure_tiny_assets(data_dir)`` builds and caches all of it; ``python -m verl_resrl.tiny.build``.
- ``reward``: ``compute_score`` for ``reward.custom_reward_function``.

Nothing is imported here, so that verl's reward loop can load ``reward`` without torch-heavy modules.
"""
