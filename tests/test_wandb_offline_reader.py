"""tests/wandb_offline.py reads back what wandb itself wrote offline, across record-log blocks."""

import glob
import os
import subprocess
import sys

from wandb_offline import history_rows

WRITE = """
import sys, wandb
run = wandb.init(project="p", name="n", dir=sys.argv[1])
for step in range(600):  # ~60 bytes a row: the run file spans several 32 KiB blocks
    wandb.log({"resrl/coverage": step / 600, "val-core/x/acc/mean@1": float(step % 7), "tag": "s" * (step % 50)},
              step=step)
wandb.finish()
"""


def test_rows_written_by_wandb_offline_are_read_back(tmp_path):
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    subprocess.run([sys.executable, "-c", WRITE, str(tmp_path)], env=env, check=True, timeout=180,
                   capture_output=True)
    (path,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert os.path.getsize(path) > 2 * 32768
    rows = history_rows(path)
    assert [r["_step"] for r in rows] == list(range(600))
    for step, row in enumerate(rows):
        assert row["resrl/coverage"] == step / 600 and row["val-core/x/acc/mean@1"] == float(step % 7)
        assert row["tag"] == "s" * (step % 50)
