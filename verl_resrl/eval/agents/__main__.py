"""``python -m verl_resrl.eval.agents``: the command line (see the package's docstring)."""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import DictConfig, OmegaConf

from verl_resrl.eval.agents.options import CONFIG_DIR, CONFIG_NAME, EXIT_INPUT, InputError, unknown_override
from verl_resrl.eval.agents.run import run_agent_eval


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_INPUT)


def main() -> None:
    """The command line: options checked before Hydra composes, input errors as one line (exit 2)."""
    import hydra

    cfg = OmegaConf.load(os.path.join(CONFIG_DIR, f"{CONFIG_NAME}.yaml"))
    problem = unknown_override(sys.argv[1:], cfg)
    if problem:
        _fail(problem)

    @hydra.main(config_path=CONFIG_DIR, config_name=CONFIG_NAME, version_base=None)
    def run(cfg: DictConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("verl.utils.tokenizer.continuous_token_wiring").setLevel(logging.WARNING)  # one per episode
        try:
            summary = run_agent_eval(cfg)
        except InputError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            _fail(str(err))
        print(summary["table"], end="", flush=True)

    run()


if __name__ == "__main__":
    main()
