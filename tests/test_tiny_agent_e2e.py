"""verl's real v1 trainer on text-game episodes on CPU: ``+recipe=resrl_tiny_agent`` for 2 steps (one run).

The first real check of the ``resrl_text_env`` loop and of the per-step ``agent/*`` hook inside verl's trainer: the
run's metrics carry ``agent/*`` and ResRL's statistics every step and the validation's success; afterwards no
TextWorldExpress JVM of the run is left. The run is a subprocess in its own session with a hard timeout (its process
group killed on expiry) and a private Ray temp dir whose processes are killed by id afterwards; its environment
carries a marker that every process it starts inherits (Ray's workers, their JVMs), so the JVM check counts the
run's own JVMs only, not those of other suites on the machine.
"""

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
from process_cleanup import kill_processes_naming

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 600
AGENT_KEYS = ("agent/success", "agent/score", "agent/turns", "agent/invalid_actions", "agent/lost")


def jvms_marked(marker: str) -> list[int]:
    """Live (not zombie) java processes whose environment carries ``marker``."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"java" not in fh.read():
                    continue
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if marker.encode() in fh.read():
                    out.append(int(pid))
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def agent_dir():
    """The task's assets (the committed warm start installed on first use) in the shared cache."""
    from verl_resrl.tiny_agent.build import default_data_dir, ensure_tiny_agent_assets

    return ensure_tiny_agent_assets(default_data_dir()).data_dir


@pytest.mark.timeout(RUN_TIMEOUT_S + 120)
def test_two_resrl_steps_on_text_game_episodes(tmp_path, agent_dir):
    marker = f"RESRL_AGENT_E2E_{uuid.uuid4().hex}"
    ray_tmp = tempfile.mkdtemp(prefix="rt_", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    out_dir = tmp_path / "run"
    # validation once, after step 2, on 8 dev games: the least that still exercises the loop's validation path
    cmd = [sys.executable, "-m", "verl_resrl.main_ppo", "+recipe=resrl_tiny_agent",
           f"resrl_tiny_agent.data_dir={agent_dir}", f"trainer.default_local_dir={out_dir}",
           "trainer.total_training_steps=2", "trainer.test_freq=2", "trainer.val_before_train=false",
           "data.val_max_samples=8", "trainer.logger=[console]", f"+ray_kwargs.ray_init._temp_dir={ray_tmp}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "RESRL_E2E_MARKER": marker})
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        rc = None
    finally:
        kill_processes_naming(ray_tmp)
    log = out_dir / "run.log"
    if log.exists():
        output += "\n----- run.log -----\n" + log.read_text(errors="replace")
    assert rc == 0, f"run failed (rc={rc}):\n{output[-6000:]}"

    deadline = time.monotonic() + 15  # py4j's JVMs end when their worker does
    while jvms_marked(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not jvms_marked(marker), "TextWorldExpress JVMs of the run are still alive"

    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "critic/score/mean" in r]
    assert [r["step"] for r in steps] == [1, 2], output[-3000:]
    for record in steps:
        for key in (*AGENT_KEYS, "resrl/coverage", "resrl/groups_mixed", "actor/pg_loss", "training/num_turns/mean"):
            assert key in record and math.isfinite(record[key]), (key, sorted(record))
        assert 0.0 <= record["agent/success"] <= record["agent/score"] + 1e-9 <= 1.0 + 1e-9  # a win scores 1
        assert 1.0 <= record["agent/turns"] <= 6.0  # at least one model turn, at most the recipe's max_turns
        assert record["agent/lost"] == 0.0  # no environment died or hung
        # the reward is the environment's score: verl's per-step score mean is the same mean over the same rows
        assert record["critic/score/mean"] == pytest.approx(record["agent/score"], abs=1e-6)
    val = [r for r in records if "val-core/twx_twc/acc/mean@1" in r]
    assert len(val) == 1 and 0.0 <= val[0]["val-core/twx_twc/acc/mean@1"] <= 1.0
    assert "val-aux/twx_twc/agent/turns/mean@1" in val[0], sorted(val[0])
