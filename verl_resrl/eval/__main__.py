"""``python -m verl_resrl.eval``: Avg@16, unbiased Pass@k, diversity, tables and plots for an HF model folder or a
verl FSDP checkpoint (``.../global_step_N/actor``, merged with verl's model merger).

    python -m verl_resrl.eval model_path=ckpt/hf 'benchmarks=[data/aime2024.parquet,data/aime2025.parquet]' \
        output_dir=out/resrl run_name=ResRL n=128

Options: verl_resrl/eval/config/eval.yaml and docs/evaluation.md.
"""

import hydra
from omegaconf import DictConfig

from verl_resrl.eval.runner import run_eval


@hydra.main(config_path="config", config_name="eval", version_base=None)
def main(cfg: DictConfig) -> None:
    """Run the evaluation and print the markdown table."""
    summary = run_eval(cfg)
    with open(summary["reports"]["table"]) as f:
        print(f.read())


if __name__ == "__main__":
    main()
