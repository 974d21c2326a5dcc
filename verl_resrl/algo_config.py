"""verl seam: ``algorithm._target_``. verl's AlgoConfig is a fixed dataclass, so our knobs need a subclass.

``algorithm.resrl.*`` holds ResRL's knobs (see ``verl_resrl.algos.resrl.ResRLConfig`` for their meaning and paper
origin) plus ``hidden_layer``; ``algorithm.w_reinforce_lambda`` is W-REINFORCE's positive weight.
"""

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from verl.trainer.config import AlgoConfig

from verl_resrl.algos.baselines import NSR_DEFAULT_LAMBDA
from verl_resrl.algos.resrl import ResRLConfig

RESRL_ESTIMATOR = "resrl"
DEFAULT_HIDDEN_LAYER = -2
"""Index into HF ``output_hidden_states`` (embeddings, block 1..L): -2 is the output of the second-to-last decoder
block, the reference code's choice; -1 is the last hidden state after the final norm, i.e. the LM-head input."""


@dataclass
class ResRLAlgoConfig(AlgoConfig):
    """verl's AlgoConfig plus ``resrl`` (ResRL knobs) and ``w_reinforce_lambda`` (arXiv 2506.01347)."""

    w_reinforce_lambda: float = NSR_DEFAULT_LAMBDA
    resrl: dict[str, Any] = field(default_factory=dict)


def resrl_settings(node: Mapping[str, Any] | None) -> tuple[ResRLConfig, int]:
    """Turn the ``algorithm.resrl`` node into (ResRLConfig, hidden_layer); unknown keys are an error naming them."""
    node = dict(node or {})
    hidden_layer = node.pop("hidden_layer", DEFAULT_HIDDEN_LAYER)
    known = {f.name for f in fields(ResRLConfig)}
    unknown = sorted(set(node) - known)
    if unknown:
        raise ValueError(
            f"unknown key(s) algorithm.resrl.{', algorithm.resrl.'.join(unknown)}; known: hidden_layer, "
            + ", ".join(sorted(known))
        )
    if not isinstance(hidden_layer, int) or isinstance(hidden_layer, bool):
        raise ValueError(f"algorithm.resrl.hidden_layer must be an int (HF hidden_states index), got {hidden_layer!r}")
    try:
        return ResRLConfig(**node), hidden_layer
    except ValueError as err:
        raise ValueError(f"algorithm.resrl: {err}") from None
