"""verl.plugins entry point: runs inside ``import verl`` in every process and registers our extensions.

verl swallows plugin import errors at DEBUG level, so each registration is wrapped to log loudly instead.
"""

import logging

logger = logging.getLogger(__name__)


def _register_all():
    """Import every module whose import registers something with verl."""
    import importlib

    for mod in ("verl_resrl.workers.cpu_platform", "verl_resrl.workers.hf_rollout", "verl_resrl.adv_estimators", "verl_resrl.rewards.reward_manager", "verl_resrl.workers.resrl_engine"):
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - surfaced loudly because verl would hide it
            logger.exception("verl_resrl: failed to register %s", mod)
            raise


_register_all()
