"""The tiny study's held-out prompts: a fixed subset of the tiny task's val split (never trained on).

Problems with at least ``min_terms`` operands (the warm start's greedy accuracy is 67% / 41% / 24% on 2 / 3 / 4
terms, build facts), the first ``num_prompts`` of them in val order (a seeded random draw): hard enough that the
warm start's Pass@64 stays below 1, easy enough that its Pass@1 is well above 0 (docs/evaluation.md).
"""

from __future__ import annotations

import os


def write_tiny_heldout(val_parquet: str, out_path: str, min_terms: int, num_prompts: int) -> int:
    """Write the subset to ``out_path`` (same verl schema) and return its size; an equal file is left as it is."""
    import pandas as pd

    frame = pd.read_parquet(val_parquet)
    terms = frame["extra_info"].map(lambda info: int(info["num_terms"]))
    subset = frame[terms >= min_terms].head(num_prompts).reset_index(drop=True)
    if len(subset) < num_prompts:
        raise ValueError(f"heldout: only {len(subset)} val problems have >= {min_terms} terms, "
                         f"num_prompts={num_prompts} asked")
    if os.path.exists(out_path) and pd.read_parquet(out_path).equals(subset):
        return len(subset)  # unchanged: the evals' benchmark fingerprint stays valid
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    subset.to_parquet(out_path + ".tmp", index=False)
    os.replace(out_path + ".tmp", out_path)
    return len(subset)
