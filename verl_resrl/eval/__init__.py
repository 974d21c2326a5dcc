"""Evaluation: unbiased Pass@k, Avg@k and diversity metrics, and the ``python -m verl_resrl.eval`` CLI.

``verl_resrl.eval.metrics`` is pure (numpy only); nothing here imports verl, torch or vLLM at package import.
"""
