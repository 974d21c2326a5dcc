"""``python -m verl_resrl.main_ppo +recipe=NAME [overrides]``: verl's PPO entry with our config, recipes and trainer.

Extends verl.trainer.main_ppo through its reusable pieces (``run_ppo`` and ``TaskRunnerV1``) instead of copying it.
"""

from importlib import resources

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


def register_recipes() -> list[str]:
    """Store every recipes/*.yaml in Hydra's ConfigStore as group ``recipe`` (package _global_).

    Why not a searchpath: the recipes folder is installed as ``verl_resrl.recipe`` through a package_dir mapping;
    reading it through importlib works for regular and editable installs alike, a file-path search does not.
    """
    store = ConfigStore.instance()
    names = []
    for entry in sorted(resources.files("verl_resrl.recipe").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            name = entry.name[: -len(".yaml")]
            store.store(group="recipe", name=name, node=OmegaConf.create(entry.read_text()), package="_global_")
            names.append(name)
    return names


register_recipes()


@hydra.main(config_path="config", config_name="resrl_trainer", version_base=None)
def main(config):
    """Validate, then run verl's PPO with our task runner."""
    from verl_resrl.launcher import launch

    launch(config)


if __name__ == "__main__":
    main()
