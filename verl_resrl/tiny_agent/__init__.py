"""The tiny agent task (``+recipe=resrl_tiny_agent``): ResRL on TextWorldExpress ``twc`` episodes played through the
``resrl_text_env`` agent loop on a 2-core CPU, with the tiny byte-level model warm-started on TWX's gold paths.

- ``task.py``: the rows (TWX train seeds / a fixed set of dev seeds, written by ``verl_resrl.data.agent_envs``) and
  the gold transcripts, played on TWX with the agent loop's own messages;
- ``warmstart.py``: the transcripts as token ids and labels (the loop's layout), SFT, and held-out success measured by
  playing episodes with ``generate``;
- ``build.py``: the cached build (rows, model directory, committed warm start or ``--retrain``);
- ``launch.py``: the launcher hook that fills the ``resrl_tiny_agent`` placeholders.

docs/tiny_agent.md has the measured figures.
"""
