"""The method study: methods x seeds of real main_ppo runs, their evals, and a report with intervals and a verdict.

``python -m verl_resrl.study`` (``verl_resrl/study/__main__.py``); docs/evaluation.md, "Reproducing the paper's
comparison".
"""
