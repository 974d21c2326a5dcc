"""What ``verl_resrl.launching.launcher`` calls for the tiny agent task (one hook).

:func:`prepare_tiny_agent_assets`: with ``resrl_tiny_agent.enable=true``, build (once, cached) or reuse the task and
replace every config key in :data:`PLACEHOLDER_KEYS` whose value is the string ``"resrl_tiny_agent"``; a dry run
builds nothing: it fills the paths a build would have and returns what a real run would build.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf, open_dict

PLACEHOLDER = "resrl_tiny_agent"
PLACEHOLDER_KEYS = {  # config key -> TinyAgentAssets field
    "data.train_files": "train_parquet",
    "data.val_files": "val_parquet",
    "actor_rollout_ref.model.path": "model_dir",
}
OPTIONS = ("enable", "data_dir", "rebuild")  # the resrl_tiny_agent block's keys


def prepare_tiny_agent_assets(config):
    """Build/reuse the tiny agent task and fill the keys that say ``resrl_tiny_agent`` (no-op unless enabled).

    Returns the ``dry_run.PlannedBuild`` of what a dry run's real run would build first, else None.
    """
    if not OmegaConf.select(config, "resrl_tiny_agent.enable", default=False):
        return None
    unknown = sorted(set(OmegaConf.select(config, "resrl_tiny_agent")) - set(OPTIONS))
    if unknown:  # a misspelt key would otherwise be ignored (e.g. a rebuild that never happens)
        raise ValueError(f"resrl_tiny_agent: unknown option(s) {unknown}; known: {list(OPTIONS)}")
    from verl_resrl.tiny_agent import build

    data_dir = OmegaConf.select(config, "resrl_tiny_agent.data_dir", default=None) or build.default_data_dir()
    rebuild = bool(OmegaConf.select(config, "resrl_tiny_agent.rebuild", default=False))
    planned = None
    if OmegaConf.select(config, "trainer.dry_run", default=False):
        from verl_resrl.launching.dry_run import plan_cached_build

        planned = plan_cached_build("tiny agent task", build.TASK, data_dir, build.BUILD_DIR,
                                    build.TinyAgentBuildSettings(), rebuild=rebuild, key="resrl_tiny_agent.data_dir")
        assets = build._assets(os.path.abspath(os.path.expanduser(data_dir)), {})  # the paths a build has
        built = "" if planned is None else " (not built: a dry run builds nothing)"
    else:
        try:
            assets = build.ensure_tiny_agent_assets(data_dir, rebuild=rebuild)
        except build.TinyAgentAssetsError as err:
            raise build.TinyAgentAssetsError(f"{err}\n(main_ppo: resrl_tiny_agent.data_dir=DIR picks another "
                                             "folder; resrl_tiny_agent.rebuild=true replaces a build of ours)") from err
        built = ""
    print(f"[resrl] tiny agent task assets: {assets.data_dir}{built}", flush=True)
    for key, attr in PLACEHOLDER_KEYS.items():
        if OmegaConf.select(config, key, default=None) == PLACEHOLDER:
            with open_dict(config):
                OmegaConf.update(config, key, getattr(assets, attr), force_add=True)
    return planned
