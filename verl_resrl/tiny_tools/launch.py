"""What ``verl_resrl.launching.launcher`` calls for the tool task and for multi-turn runs (two hooks, nothing else).

- :func:`prepare_tiny_tools_assets`: with ``resrl_tiny_tools.enable=true``, build (once, cached) or reuse the tool
  task and replace every config key in ``TOOLS.keys`` whose value is the string ``"resrl_tiny_tools"``
  (a dry run builds nothing: it fills the paths a build would have and returns what a real run would build).
- :func:`wrap_trainer`: with ``actor_rollout_ref.rollout.multi_turn.enable=true``, the trainer class with the
  ``tools/*`` metrics of ``trainer_hooks.py``; otherwise the class unchanged.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from verl_resrl.launching.tiny_assets import TinyTask, prepare

TOOLS = TinyTask(block="resrl_tiny_tools", label="tiny tool task", build_module="verl_resrl.tiny_tools.build",
                 settings_class="TinyToolsBuildSettings", ensure="ensure_tiny_tools_assets",
                 error="TinyToolsAssetsError",
                 keys={"data.train_files": "train_parquet", "data.val_files": "val_parquet",
                       "actor_rollout_ref.model.path": "model_dir",
                       "actor_rollout_ref.rollout.multi_turn.tool_config_path": "tool_config"})


def prepare_tiny_tools_assets(config):
    """Build/reuse the tool task and fill the keys that say ``resrl_tiny_tools`` (no-op unless enabled; a dry run
    builds nothing and returns what a real run would build first: ``launching.tiny_assets``)."""
    return prepare(config, TOOLS)


def wrap_trainer(trainer_cls, config):
    """``trainer_cls`` with the ``tools/*`` step metrics when multi-turn rollouts are on, else unchanged."""
    if not OmegaConf.select(config, "actor_rollout_ref.rollout.multi_turn.enable", default=False):
        return trainer_cls
    from verl_resrl.tiny_tools.trainer_hooks import with_tool_metrics

    return with_tool_metrics(trainer_cls)
