"""verl seam: trainer subclassing. Chooses the v1 trainer class our TaskRunner builds.

ResRL needs a trainer that keeps prompt groups whole and installs the ResRL loss; every other estimator runs verl's
own trainer unchanged.
"""

from verl.trainer.ppo.v1 import get_trainer_cls


def resolve_trainer_cls(config):
    """The trainer class for this config (verl's registered v1 trainer for ``trainer.v1.trainer_mode``)."""
    return get_trainer_cls(config.trainer.v1.trainer_mode)
