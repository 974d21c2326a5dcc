"""What ``verl_resrl.launcher`` calls for the tool task and for multi-turn runs (two hooks, nothing else).

- :func:`prepare_tiny_tools_assets`: with ``resrl_tiny_tools.enable=true``, build (once, cached) or reuse the tool
  task and replace every config key in :data:`PLACEHOLDER_KEYS` whose value is the string ``"resrl_tiny_tools"``.
- :func:`wrap_trainer`: with ``actor_rollout_ref.rollout.multi_turn.enable=true``, the trainer class with the
  ``tools/*`` metrics of ``trainer_hooks.py``; otherwise the class unchanged.
"""

from __future__ import annotations

from omegaconf import OmegaConf, open_dict

PLACEHOLDER = "resrl_tiny_tools"
PLACEHOLDER_KEYS = {  # config key -> TinyToolsAssets field
    "data.train_files": "train_parquet",
    "data.val_files": "val_parquet",
    "actor_rollout_ref.model.path": "model_dir",
    "actor_rollout_ref.rollout.multi_turn.tool_config_path": "tool_config",
}


def prepare_tiny_tools_assets(config) -> None:
    """Build/reuse the tool task and fill the keys that say ``resrl_tiny_tools`` (no-op unless enabled)."""
    if not OmegaConf.select(config, "resrl_tiny_tools.enable", default=False):
        return
    from verl_resrl.tiny_tools.build import TinyToolsAssetsError, default_data_dir, ensure_tiny_tools_assets

    data_dir = OmegaConf.select(config, "resrl_tiny_tools.data_dir", default=None) or default_data_dir()
    rebuild = bool(OmegaConf.select(config, "resrl_tiny_tools.rebuild", default=False))
    try:
        assets = ensure_tiny_tools_assets(data_dir, rebuild=rebuild)
    except TinyToolsAssetsError as err:
        raise TinyToolsAssetsError(f"{err}\n(main_ppo: resrl_tiny_tools.data_dir=DIR picks another folder; "
                                   "resrl_tiny_tools.rebuild=true replaces a build of ours)") from err
    print(f"[resrl] tiny tool task assets: {assets.data_dir}", flush=True)
    for key, attr in PLACEHOLDER_KEYS.items():
        if OmegaConf.select(config, key, default=None) == PLACEHOLDER:
            with open_dict(config):
                OmegaConf.update(config, key, getattr(assets, attr), force_add=True)


def wrap_trainer(trainer_cls, config):
    """``trainer_cls`` with the ``tools/*`` step metrics when multi-turn rollouts are on, else unchanged."""
    if not OmegaConf.select(config, "actor_rollout_ref.rollout.multi_turn.enable", default=False):
        return trainer_cls
    from verl_resrl.tiny_tools.trainer_hooks import with_tool_metrics

    return with_tool_metrics(trainer_cls)
