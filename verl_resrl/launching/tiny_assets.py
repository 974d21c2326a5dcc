"""The tiny tasks' assets in a run: build them (once, cached) or reuse them, and fill the config keys that name them.

One function for the three tiny tasks (``resrl_tiny``, ``resrl_tiny_tools``, ``resrl_tiny_agent``). A tiny recipe
sets ``<block>.enable: true`` and writes the block's name as the value of every key a build fills (data files, model
folder, tool config); this replaces those values with the built paths. A dry run builds nothing: the keys get the
paths a build would have, and the ``dry_run.PlannedBuild`` returned says what a real run would build first.
"""

from __future__ import annotations

import dataclasses
import importlib
import os

from omegaconf import OmegaConf, open_dict


@dataclasses.dataclass(frozen=True)
class TinyTask:
    """One tiny task as the launcher sees it: its config block, its builder and the keys a build fills."""

    block: str  # the config block, also the placeholder value of the keys below, e.g. "resrl_tiny_tools"
    label: str  # how the console names it, e.g. "tiny tool task"
    keys: dict  # config key -> field of the builder's assets
    build_module: str  # e.g. "verl_resrl.tiny_tools.build": TASK, BUILD_DIR, default_data_dir, _assets
    settings_class: str  # the builder's settings dataclass (its defaults are what a build makes)
    ensure: str  # the builder's build-or-reuse function
    error: str  # the builder's error class
    options: tuple | None = None  # the block's known keys (None: not checked)


def prepare(config, task: TinyTask):
    """Build/reuse ``task`` and fill the keys that hold its placeholder (no-op, None, unless enabled)."""
    if not OmegaConf.select(config, f"{task.block}.enable", default=False):
        return None
    if task.options is not None:
        unknown = sorted(set(OmegaConf.select(config, task.block)) - set(task.options))
        if unknown:  # a misspelt key would otherwise be ignored (e.g. a rebuild that never happens)
            raise ValueError(f"{task.block}: unknown option(s) {unknown}; known: {list(task.options)}")
    build = importlib.import_module(task.build_module)
    data_dir = OmegaConf.select(config, f"{task.block}.data_dir", default=None) or build.default_data_dir()
    rebuild = bool(OmegaConf.select(config, f"{task.block}.rebuild", default=False))
    planned, built = None, ""
    if OmegaConf.select(config, "trainer.dry_run", default=False):
        from verl_resrl.launching.dry_run import plan_cached_build

        planned = plan_cached_build(task.label, build.TASK, data_dir, build.BUILD_DIR,
                                    getattr(build, task.settings_class)(), rebuild=rebuild, key=f"{task.block}.data_dir")
        assets = build._assets(os.path.abspath(os.path.expanduser(data_dir)), {})  # the paths a build has
        built = "" if planned is None else " (not built: a dry run builds nothing)"
    else:
        error = getattr(build, task.error)
        try:
            assets = getattr(build, task.ensure)(data_dir, rebuild=rebuild)
        except error as err:  # the builder's hint names its own CLI; add this command's spelling
            raise error(f"{err}\n(main_ppo: {task.block}.data_dir=DIR picks another folder; "
                        f"{task.block}.rebuild=true replaces a build of ours)") from err
    print(f"[resrl] {task.label} assets: {assets.data_dir}{built}", flush=True)
    for key, field in task.keys.items():
        if OmegaConf.select(config, key, default=None) == task.block:
            with open_dict(config):
                OmegaConf.update(config, key, getattr(assets, field), force_add=True)
    return planned
