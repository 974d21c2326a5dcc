"""The tiny study's held-out prompts: two sets, neither ever trained on.

* ``heldout.parquet`` (data source ``resrl_tiny/arith``): a fixed subset of the tiny task's val split, problems with
  at least ``min_terms`` operands, the first ``num_prompts`` in val order (a seeded random draw). In distribution:
  the warm start's Pass@1 is ~24-32% (by CPU kind), but its Pass@64 is saturated (every prompt solved at least 4
  times in 64).
* ``heldout_long.parquet`` (data source ``resrl_tiny/arith_long``): ``long_prompts`` distinct problems with exactly
  ``long_terms`` operands (5 by default), drawn by the task's own generator from a stream seeded with ``long_seed``.
  Training and the warm start see 2-4 operands only (checked against the train split), so these are both unseen and
  one step longer: the warm start's Pass@1 is 3.4-5.5% and its Pass@64 22-58% (64 prompts; the build differs by
  CPU kind), so the far end of the Pass@k curve has room in both directions (docs/evaluation.md, "Choosing the
  held-out sets").
"""

from __future__ import annotations

import os
import random

LONG_SOURCE = "resrl_tiny/arith_long"


def _write_if_changed(frame, out_path: str) -> None:
    """Write ``frame`` atomically unless an equal file is there (the evals' benchmark fingerprint stays valid).

    Compared as read back from parquet: nested columns (the prompt's messages, extra_info) come back as other types
    than they were built with, so a frame built in memory never equals its own file."""
    import pandas as pd

    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    frame.to_parquet(out_path + ".tmp", index=False)
    if os.path.exists(out_path) and pd.read_parquet(out_path).equals(pd.read_parquet(out_path + ".tmp")):
        os.remove(out_path + ".tmp")
        return
    os.replace(out_path + ".tmp", out_path)


def write_tiny_heldout(val_parquet: str, out_path: str, min_terms: int, num_prompts: int) -> int:
    """Write the val subset to ``out_path`` (same verl schema) and return its size."""
    import pandas as pd

    frame = pd.read_parquet(val_parquet)
    terms = frame["extra_info"].map(lambda info: int(info["num_terms"]))
    subset = frame[terms >= min_terms].head(num_prompts).reset_index(drop=True)
    if len(subset) < num_prompts:
        raise ValueError(f"heldout: only {len(subset)} val problems have >= {min_terms} terms, "
                         f"num_prompts={num_prompts} asked")
    _write_if_changed(subset, out_path)
    return len(subset)


def write_tiny_long_heldout(train_parquet: str, out_path: str, terms: int, num_prompts: int, seed: int) -> int:
    """Write ``num_prompts`` distinct ``terms``-operand problems to ``out_path`` and return their number."""
    import pandas as pd

    from verl_resrl.tiny.task import ArithTaskConfig, _draw, verl_record

    trained = int(pd.read_parquet(train_parquet)["extra_info"].map(lambda info: int(info["num_terms"])).max())
    if terms <= trained:
        raise ValueError(f"heldout.long_terms={terms}: the training split has problems with up to {trained} operands; "
                         f"the long set must be longer than anything trained on")
    if num_prompts < 1:
        raise ValueError(f"heldout.long_prompts must be >= 1, got {num_prompts}")
    cfg = ArithTaskConfig(min_terms=terms, max_terms=terms)
    # the task's own distinct draw (as its val split is drawn), from this set's own seeded stream
    problems = _draw(random.Random(seed), cfg, num_prompts, exclude=set(), unique=True)
    rows = [dict(verl_record(problem, "heldout_long", i), data_source=LONG_SOURCE)
            for i, problem in enumerate(problems)]
    _write_if_changed(pd.DataFrame(rows), out_path)
    return len(rows)
