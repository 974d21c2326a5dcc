"""The study killed mid-way (SIGTERM) and rerun: finished runs and evals are not redone, the report is written;
with two parallel slots (the tiny study's default) both slots' children are stopped, and a failed run does not
stop the others.

The trainer is tests/study_fake_trainer.py (the outputs of a real run: step lines, metrics.jsonl, a real verl FSDP
checkpoint); everything else is real: the study's subprocess handling, verl's model merger, the eval CLI with its
verifier pool, the report. The real trainer's version is the e2e smoke in test_study_smoke.py.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = os.path.join(REPO, "tests", "study_fake_trainer.py")


def study_command(out):
    return [sys.executable, "-m", "verl_resrl.study", f"out_dir={out}", "only_methods=[grpo,resrl]", "seeds=[1]",
            "steps=3", f"trainer_command=[{sys.executable},{FAKE}]", "eval.n=2", "eval.max_new_tokens=6",
            "heldout.num_prompts=3", "heldout.long_prompts=2", "heldout.hard_prompts=2", "report.draws=200", "run_timeout_s=300",
            "eval_timeout_s=300", "parallel=2", "stagger_s=5"]


def starts(log):
    """Training starts per run folder, from the stand-in's log."""
    counts = {}
    if os.path.exists(log):
        for line in open(log):
            name = os.path.basename(os.path.dirname(json.loads(line)["dir"]))
            counts[name] = counts.get(name, 0) + 1
    return counts


def records(log):
    return [json.loads(line) for line in open(log)] if os.path.exists(log) else []


def dead(pid):
    return not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


@pytest.mark.slow  # left out of the fast tier (launch/run_tests.sh --fast)
def test_sigterm_then_rerun_redoes_only_what_is_missing(tmp_path):
    out, log = tmp_path / "study", tmp_path / "starts.jsonl"
    # resrl_s1 is slow (120 s), so that it is still training when grpo_s1 (other slot) has been evaluated
    env = dict(os.environ, FAKE_TRAINER_LOG=str(log), FAKE_STEP_SECONDS="1", FAKE_SLOW_RUNS="resrl_s1",
               FAKE_SLOW_STEP_SECONDS="40", PYTHONPATH=REPO)
    env.pop("OMP_NUM_THREADS", None)
    first = subprocess.Popen(study_command(out), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    done_eval = out / "evals" / "grpo_s1" / "results.json"
    deadline = time.monotonic() + 600
    while not (starts(log).get("resrl_s1") and done_eval.exists()):  # run 1 evaluated, run 2 training
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "the study did not reach its second run in time"
        time.sleep(1)
    os.kill(first.pid, signal.SIGTERM)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 143, output
    assert "interrupted" in output and "rerun the same command" in output
    assert all(dead(r["pid"]) for r in records(log))  # every slot's child was stopped with the study
    assert {r["omp"] for r in records(log)} == {str(max(1, (os.cpu_count() or 1) // 2))}  # cores shared out
    assert not (out / "evals" / "resrl_s1" / "results.json").exists()
    kept = {p: os.path.getmtime(p) for p in (done_eval, out / "evals" / "warmstart" / "results.json",
                                           out / "runs" / "grpo_s1" / "ckpt" / "global_step_3" / "actor"
                                           / "model_world_size_1_rank_0.pt")}

    env["FAKE_STEP_SECONDS"], env["FAKE_SLOW_RUNS"] = "0", ""
    second = subprocess.run(study_command(out), env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert starts(log) == {"grpo_s1": 1, "resrl_s1": 2}  # only the cut-short run trained again
    assert {p: os.path.getmtime(p) for p in kept} == kept  # finished outputs untouched
    assert "eval grpo_s1: already complete" in second.stdout and "eval warmstart: already complete" in second.stdout
    assert "| resrl_tiny/arith_long |" in open(out / "evals" / "resrl_s1" / "results.md").read()  # both sets
    report = (out / "report.md").read_text()
    assert "| grpo | 1 |" in report and "| resrl | 1 |" in report and "| warmstart | - |" in report
    assert "### Verdict" in report and "resrl beats GRPO on Pass@2" in report
    assert (out / "training.png").exists() and (out / "resrl_weights.png").exists()


@pytest.mark.slow  # left out of the fast tier (launch/run_tests.sh --fast)
def test_a_failed_run_does_not_stop_the_others(tmp_path):
    out, log = tmp_path / "study", tmp_path / "starts.jsonl"
    env = dict(os.environ, FAKE_TRAINER_LOG=str(log), FAKE_FAIL_RUNS="grpo_s1", PYTHONPATH=REPO)
    result = subprocess.run(study_command(out) + ["parallel=1"], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED run 1/2 grpo_s1: training run grpo_s1 exited with 3" in result.stdout
    assert (out / "evals" / "resrl_s1" / "results.json").exists()  # the next run still trained and was evaluated
    assert "| resrl | 1 |" in (out / "report.md").read_text()  # the report covers what finished
    assert "rerun the same command to redo only them" in result.stdout
