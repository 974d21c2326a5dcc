"""The quiet console: the terminal gets our lines and every error, the log file gets every line."""

import os
import subprocess
import sys
import textwrap

from verl_resrl.console import LineFilter

METRICS_DUMP = "(TaskRunner pid=4242) step:1 - critic/score/mean:0.25 - actor/pg_loss:0.01 - timing_s/step:3.2"
THREADS = "(WorkerDict pid=77) target_num_threads 8 should not exceed total physical CPU cores 2"


def shown(lines):
    keep = LineFilter()
    return [line for line in lines if keep.show(line)]


def test_our_lines_pass_and_verls_dumps_and_worker_chatter_do_not():
    lines = ["[resrl] step 1/40 | reward +0.125 | 3.1 s", f"(TaskRunner pid=9) [resrl] validation at step 0:",
             METRICS_DUMP, THREADS, "Training Progress:  2%|2 | 1/40"]
    assert shown(lines) == lines[:2]


def test_a_traceback_is_shown_whole_with_and_without_the_ray_prefix():
    tb = ["(TaskRunner pid=5) Traceback (most recent call last):",
          '(TaskRunner pid=5)   File "/x/trainer.py", line 3, in fit',
          "(TaskRunner pid=5)     self.step()",
          "(TaskRunner pid=5)     ^^^^^^^^^^^",
          "(TaskRunner pid=5) KeyError: 'critic/score/mean'"]
    plain = ["Traceback (most recent call last):", '  File "main.py", line 1, in <module>', "    main()",
             "ValueError: actor_rollout_ref.rollout.name=vllm needs a GPU"]
    assert shown([METRICS_DUMP] + tb + [THREADS] + plain + [METRICS_DUMP]) == tb + plain


def test_error_lines_pass_and_warnings_do_not():
    error = "(raylet) A worker died or was killed while executing a task by an unexpected system error."
    killed = "Killed"
    warning = "/x/engine/__init__.py:32: UserWarning: torchtitan engine is not available: ModuleNotFoundError(...)"
    warning2 = '  warnings.warn(f"torchtitan engine is not available: {e!r}", stacklevel=1)'
    assert shown([error, killed, warning, warning2, "WARNING 12-01: something RuntimeError-ish"]) == [error, killed]


CHILD = textwrap.dedent("""
    import os, subprocess, sys
    from verl_resrl.console import quiet_console
    with quiet_console(sys.argv[1]):
        print("[resrl] step 1/2 | reward +0.5")
        print("step:1 - critic/score/mean:0.5 - " + "x" * 4000)
        os.write(2, b"(WorkerDict pid=3) target_num_threads 8 should not exceed total physical CPU cores 2\\n")
        subprocess.run([sys.executable, "-c", "print('child process line'); import sys; sys.stderr.write('Exception in child\\\\n')"])
        print("[resrl] validation at step 2:")
        raise RuntimeError("rollout server(s) died during the run")
""")


def test_a_run_shows_progress_and_its_error_and_logs_everything(tmp_path):
    log = tmp_path / "out" / "run.log"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(log)], capture_output=True, text=True, timeout=120)
    terminal = (proc.stdout + proc.stderr).splitlines()
    assert proc.returncode == 1
    assert terminal[0].startswith("[resrl] full log") and str(log) in terminal[0]
    assert "[resrl] step 1/2 | reward +0.5" in terminal and "[resrl] validation at step 2:" in terminal
    assert "Exception in child" in terminal  # a child process's error passes too (it inherits the pipe)
    assert terminal[-1] == "RuntimeError: rollout server(s) died during the run"  # the traceback reaches the terminal
    assert not any("critic/score/mean" in t or "target_num_threads" in t or "child process line" in t
                   for t in terminal)
    logged = log.read_text()
    for text in ("[resrl] step 1/2", "critic/score/mean:0.5", "target_num_threads", "child process line",
                 "Exception in child", "[resrl] validation at step 2:"):
        assert text in logged, text
    assert os.path.getsize(log) > 4000


def test_disabled_leaves_the_terminal_alone(tmp_path):
    code = ("from verl_resrl.console import quiet_console\n"
            f"with quiet_console({str(tmp_path / 'run.log')!r}, enabled=False):\n    print('step:1 - everything')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout == "step:1 - everything\n" and not (tmp_path / "run.log").exists()


def test_a_printed_config_entry_is_no_error():
    assert shown(["(_ResRLTaskRunner pid=1)           'truncation': 'error',", "{'on_error': 'raise'}",
                  '  "error_policy": "skip",']) == []
