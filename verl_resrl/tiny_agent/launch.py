"""What ``verl_resrl.launching.launcher`` calls for the tiny agent task (one hook).

:func:`prepare_tiny_agent_assets`: with ``resrl_tiny_agent.enable=true``, build (once, cached) or reuse the task and
replace every config key in ``AGENT.keys`` whose value is the string ``"resrl_tiny_agent"``; a dry run
builds nothing: it fills the paths a build would have and returns what a real run would build.
"""

from __future__ import annotations

from verl_resrl.launching.tiny_assets import TinyTask, prepare

AGENT = TinyTask(block="resrl_tiny_agent", label="tiny agent task", build_module="verl_resrl.tiny_agent.build",
                 settings_class="TinyAgentBuildSettings", ensure="ensure_tiny_agent_assets",
                 error="TinyAgentAssetsError", options=("enable", "data_dir", "rebuild"),
                 keys={"data.train_files": "train_parquet", "data.val_files": "val_parquet",
                       "actor_rollout_ref.model.path": "model_dir"})


def prepare_tiny_agent_assets(config):
    """Build/reuse the tiny agent task and fill the keys that say ``resrl_tiny_agent`` (no-op unless enabled; a
    dry run builds nothing and returns what a real run would build first: ``launching.tiny_assets``)."""
    return prepare(config, AGENT)
