"""``python -m verl_resrl.eval.agents``: agent episodes played by the trainer's own loop, scored per task and overall.

Independent expectations: TWX's own gold paths (read from the wheel directly) win every task in exactly their length;
a useless or unknown action never scores and runs to the turn limit, with TWX's own reply to an unknown command;
the success metrics are recomputed by hand from the episode lines; an episode replayed action by action in the wheel
gives the recorded observations and score; a seeded random player gives the same episodes whatever the task order
and concurrency; a JVM killed mid-episode costs exactly that episode.
"""

import json
import os
import random
import signal
import subprocess
import sys

import pytest

pytest.importorskip("textworld_express")

from test_agents_twx import java_children  # noqa: E402
from test_agents_twx import no_jvm_left  # noqa: E402,F401 - the same autouse check: no JVM of this module is left
from verl_resrl.agents.textworld_express import INVALID_REPLY, parse_task_id  # noqa: E402
from verl_resrl.data.agent_envs import sciworld_rows, twx_tiny_rows, write_agent_rows  # noqa: E402
from verl_resrl.eval import agents as ea  # noqa: E402
from verl_resrl.workers.hf_generation import GenerationResult  # noqa: E402

pytestmark = pytest.mark.timeout(300)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def tokenizer():
    from verl_resrl.tiny.tokenizer import build_tokenizer

    tok = build_tokenizer()
    tok.model_max_length = 10**6
    return tok


@pytest.fixture(scope="module")
def rows():
    return twx_tiny_rows()["dev"][:3]  # the trainer's own dev rows (1 and 2 items to put away)


@pytest.fixture(scope="module")
def twx_file(rows, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tasks") / "twx_dev.parquet")
    write_agent_rows(rows, path)
    return path


def wheel_env():
    from textworld_express import TextWorldExpressEnv

    return TextWorldExpressEnv(envStepLimit=10**9)


def reset(env, task_id, gold=False):
    t = parse_task_id(task_id)
    return env.reset(seed=t.seed, gameFold=t.fold, gameName=t.game, gameParams=t.params, generateGoldPath=gold)


@pytest.fixture(scope="module")
def gold(rows):
    """TWX's own gold path of every task, from the wheel directly."""
    from verl_resrl.agents.env_adapter import kill_wheel_env

    env = wheel_env()
    out = {}
    for row in rows:
        task_id = row["extra_info"]["task_id"]
        reset(env, task_id, gold=True)
        out[task_id] = list(env.getGoldActionSequence())
    kill_wheel_env(env)
    return out


class Scripted:
    """A policy answering each turn with ``reply(request)`` as token ids (EOS appended)."""

    def __init__(self, tokenizer, reply):
        self.tokenizer, self.reply, self.requests = tokenizer, reply, []

    def generate(self, requests):
        self.requests += requests
        return [GenerationResult(self.tokenizer.encode(self.reply(r), add_special_tokens=False)
                                 + [self.tokenizer.eos_token_id], None, "stop") for r in requests]


def run(tmp_path, tokenizer, policy, files, **overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = ea.default_config(model_path=str(tmp_path), tasks=list(files), output_dir=str(tmp_path / "out"),
                            **{"response_length": 8192, **overrides})
    summary = ea.run_agent_eval(cfg, policy=policy, tokenizer=tokenizer, hf_model_type="qwen2")
    with open(tmp_path / "out" / "episodes.jsonl") as fh:
        records = [json.loads(line) for line in fh]
    return summary, records


def test_the_gold_path_wins_every_task(tmp_path, tokenizer, twx_file, gold):
    policy = Scripted(tokenizer, lambda r: f"Let me see.\nAction: {gold[r.task_id][r.turn]}")
    summary, records = run(tmp_path, tokenizer, policy, [twx_file], episodes=2, concurrency=3)
    assert len(records) == 6 and [(r["task_id"], r["episode"]) for r in records] == [
        (t, e) for t in gold for e in range(2)]  # task order, then episode order
    for r in records:
        path = gold[r["task_id"]]
        assert r["success"] and r["score"] == 1.0 and r["reward"] == 1.0 and r["end"] == "done"
        assert r["turns"] == len(path) and [s["action"] for s in r["steps"]] == path
        assert r["invalid_actions"] == 0 and not r["lost"]
        assert r["steps"][-1]["done"] and r["steps"][-1]["score"] == 1.0
    overall = summary["overall"]
    assert overall["tasks"] == 3 and overall["episodes"] == 6 and overall["lost_episodes"] == 0
    assert overall["success_avg@2"] == overall["success_pass@1"] == overall["success_pass@2"] == 1.0
    assert overall["mean_score"] == 1.0
    assert overall["mean_turns"] == pytest.approx(sum(len(p) for p in gold.values()) * 2 / 6)
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["overall"] == overall and set(on_disk["tasks"]) == set(gold)
    assert "| overall | 100.0 | 100.0 | 100.0 | 1.000 |" in summary["table"]
    assert (tmp_path / "out" / "results.md").exists() and not (tmp_path / "out" / "episodes.jsonl.partial").exists()


@pytest.mark.parametrize("reply, invalid", [("Action: inventory", False), ("Action: dance a jig", True),
                                            ("Action:   ", True)], ids=["useless", "unknown", "unparsable"])
def test_a_wrong_action_scores_zero_at_the_turn_limit(tmp_path, tokenizer, twx_file, reply, invalid):
    policy = Scripted(tokenizer, lambda r: reply)
    summary, records = run(tmp_path, tokenizer, policy, [twx_file], episodes=2, max_tasks=2,
                           **{"resrl_agent.max_turns": 4})
    assert len(records) == 4
    for r in records:
        assert r["end"] == "turn_limit" and r["turns"] == 4 and len(r["steps"]) == 4
        assert not r["success"] and r["score"] == 0.0 and r["reward"] == 0.0
        assert r["invalid_actions"] == (4 if invalid else 0)
        if invalid:
            assert all(s["observation"].strip() == INVALID_REPLY for s in r["steps"])
    if reply == "Action:   ":
        assert all(s["action"] is None for r in records for s in r["steps"])  # never sent to the environment
    overall = summary["overall"]
    assert overall["success_avg@2"] == overall["success_pass@2"] == overall["mean_score"] == 0.0
    assert overall["mean_turns"] == 4 and overall["invalid_actions"] == (16 if invalid else 0)


def admissible(tokenizer, prompt_ids) -> list[str]:
    """The admissible actions the loop listed in the last observation turn (max_admissible_shown)."""
    text = tokenizer.decode(prompt_ids)
    line = text.rsplit("Admissible actions: ", 1)[1].split("<|im_end|>", 1)[0]
    return line.split(", ")


def test_episodes_are_deterministic_by_task_id(tmp_path, tokenizer, rows, twx_file):
    def player(r):  # a seeded random player: its choice depends on the turn's seed and what it is shown
        return f"Action: {random.Random(r.seed).choice(admissible(tokenizer, r.prompt_ids))}"

    reverse = str(tmp_path / "reversed.parquet")
    write_agent_rows(list(reversed(rows)), reverse)
    _, first = run(tmp_path / "a", tokenizer, Scripted(tokenizer, player), [twx_file], episodes=3, concurrency=4,
                   **{"resrl_agent.max_turns": 6})
    _, second = run(tmp_path / "b", tokenizer, Scripted(tokenizer, player), [reverse], episodes=3, concurrency=1,
                    **{"resrl_agent.max_turns": 6})

    def key(records):
        drop = ("file", "row")
        return {(r["task_id"], r["episode"]): {k: v for k, v in r.items() if k not in drop} for r in records}

    assert key(first) == key(second)
    # the seed differs between episodes of one task: some task's episodes differ
    actions = {(r["task_id"], r["episode"]): [s["action"] for s in r["steps"]] for r in first}
    assert any(actions[(t, 0)] != actions[(t, 1)] for t, _ in actions)
    # the turns' seeds are the documented function of (seed, task id, episode, turn)
    assert ea.turn_seed(0, "twx:a", 0, 0) == ea.turn_seed(0, "twx:a", 0, 0) != ea.turn_seed(0, "twx:a", 1, 0)


def test_a_jvm_killed_mid_episode_loses_that_episode_only(tmp_path, tokenizer, twx_file, gold):
    before = set(java_children())
    first = sorted(gold)[0]

    def reply(r):
        if (r.task_id, r.episode, r.turn) == (first, 0, 1):
            for pid in set(java_children()) - before:  # the pool's only JVM (max_envs 1)
                os.kill(pid, signal.SIGKILL)
        return f"Action: {gold[r.task_id][r.turn]}"

    summary, records = run(tmp_path, tokenizer, Scripted(tokenizer, reply), [twx_file], episodes=2, concurrency=1,
                           **{"resrl_agent.max_envs": 1, "resrl_agent.step_timeout_s": 10})
    lost = [r for r in records if r["lost"]]
    assert [(r["task_id"], r["episode"]) for r in lost] == [(first, 0)]
    assert lost[0]["end"].startswith("lost:") and not lost[0]["success"] and lost[0]["reward"] == 0.0
    assert lost[0]["steps"][-1]["observation"] is None  # the step that found the JVM dead
    assert all(r["success"] for r in records if not r["lost"])
    assert summary["overall"]["lost_episodes"] == 1 and summary["overall"]["success_avg@2"] == pytest.approx(5 / 6)
    assert summary["tasks"][first]["success_pass@2"] == 1.0 and summary["tasks"][first]["success_avg@2"] == 0.5


def test_bad_options_in_python_name_the_key(tmp_path, tokenizer, twx_file):
    policy = Scripted(tokenizer, lambda r: "Action: look around")
    with pytest.raises(ea.InputError, match="resrl_agent.reward must be 'score' or 'success'"):
        run(tmp_path, tokenizer, policy, [twx_file], **{"resrl_agent.reward": "win"})
    with pytest.raises(ea.InputError, match=r"ks must be integers in \[1, episodes=2\]"):
        run(tmp_path, tokenizer, policy, [twx_file], episodes=2, ks=[4])
    with pytest.raises(ea.InputError, match="appears twice"):
        run(tmp_path, tokenizer, policy, [twx_file, twx_file])
    row = json.loads(json.dumps(twx_tiny_rows()["dev"][0]))
    row["extra_info"]["task_id"] = row["extra_info"]["task_id"].replace(":dev:10000:", ":dev:5:")  # a train seed
    leaky = str(tmp_path / "leaky.parquet")
    write_agent_rows([row], leaky)
    with pytest.raises(ea.InputError, match=r"leaky.parquet row 0: extra_info.task_id: .*seed 5 is outside the dev"):
        run(tmp_path, tokenizer, policy, [leaky])


def test_the_config_defaults_are_the_loops_own():
    import dataclasses

    from verl_resrl.agents.agent_loop import AgentOptions

    assert dict(ea.default_config().resrl_agent) == dataclasses.asdict(AgentOptions())


# ----------------------------------------------------------------------------------------------- the real CLI
def cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "verl_resrl.eval.agents", *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def tiny_model():
    from verl_resrl.tiny.build import default_data_dir, ensure_tiny_assets

    return ensure_tiny_assets(default_data_dir()).model_dir  # the committed resrl_tiny warm start


@pytest.mark.slow  # left out of the fast tier (launch/run_tests.sh --fast)
def test_the_tiny_model_plays_through_the_cli(tmp_path, tiny_model, rows):
    pytest.importorskip("scienceworld")
    twx = str(tmp_path / "twx.parquet")
    write_agent_rows(rows, twx)
    sci = str(tmp_path / "sci.parquet")  # one dev variation of find-non-living-thing (dev 150-224)
    write_agent_rows(sciworld_rows({"find-non-living-thing": {"train": [], "dev": [150], "test": []}})["dev"], sci)
    out = tmp_path / "out"
    proc = cli(f"model_path={tiny_model}", f"tasks=[{twx},{sci}]", f"output_dir={out}", "episodes=2", "max_tasks=2",
               "concurrency=2", "resrl_agent.max_envs=1", "resrl_agent.max_turns=3",  # one ScienceWorld JVM (~1 GB)
               "resrl_agent.max_tokens_per_turn=16", "response_length=4096", "sampling.temperature=1.0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    task_ids = [r["extra_info"]["task_id"] for r in rows[:2]] + ["sciworld:find-non-living-thing:dev:150"]
    assert [(r["task_id"], r["episode"]) for r in records] == [(t, e) for t in task_ids for e in range(2)]
    assert summary["backend"] == "hf" and set(summary["tasks"]) == set(task_ids)
    for r in records:
        assert 1 <= r["turns"] <= 3 and len(r["steps"]) == r["turns"] and not r["lost"]
        assert r["first_observation"] and len(r["finish_reasons"]) == r["turns"]
    # the summary recomputed by hand from the lines
    overall = summary["overall"]
    assert overall["episodes"] == 6 and overall["tasks"] == 3
    assert overall["success_avg@2"] == sum(r["success"] for r in records) / 6
    assert overall["mean_turns"] == pytest.approx(sum(r["turns"] for r in records) / 6)
    assert overall["invalid_actions"] == sum(r["invalid_actions"] for r in records)
    assert overall["mean_score"] == pytest.approx(sum(r["score"] for r in records) / 6)
    assert set(summary["data_sources"]) == {"twx_twc", "sciworld"}
    assert "| overall |" in proc.stdout and "| all sciworld |" in proc.stdout
    # a TWX episode replayed in the wheel itself: the same observations and score
    from verl_resrl.agents.env_adapter import kill_wheel_env

    env = wheel_env()
    try:
        for r in (r for r in records if r["task_id"].startswith("twx:")):
            obs, _ = reset(env, r["task_id"])
            assert obs == r["first_observation"]
            for step in r["steps"]:
                if step["action"] is None:
                    continue
                obs, _, _, info = env.step(step["action"])
                assert obs == step["observation"]
                assert max(0.0, min(1.0, info["score"])) == step["score"]
    finally:
        kill_wheel_env(env)


def math_file(tmp_path) -> str:
    from verl_resrl.data.convert import write_parquet

    path = str(tmp_path / "math.parquet")
    write_parquet([{"data_source": "m", "prompt": [{"role": "user", "content": "1+1?"}], "ability": "math",
                    "reward_model": {"style": "rule", "ground_truth": "2"}, "extra_info": {"index": 0}}], path)
    return path


@pytest.mark.parametrize("case", ["unknown option", "unknown loop option", "missing model_path", "missing file",
                                  "not an agent file", "bad value"])
def test_bad_input_is_one_line_naming_the_key(tmp_path, case):
    base = [f"model_path={tmp_path}", f"output_dir={tmp_path / 'out'}"]
    args = {
        "unknown option": [*base, "tasks=[x.parquet]", "episode=4"],
        "unknown loop option": [*base, "tasks=[x.parquet]", "resrl_agent.max_turn=4"],
        "missing model_path": ["tasks=[x.parquet]", f"output_dir={tmp_path}"],
        "missing file": [*base, f"tasks=[{tmp_path / 'absent.parquet'}]"],
        "not an agent file": [*base, f"tasks=[{math_file(tmp_path)}]"],
        "bad value": [*base, "tasks=[x.parquet]", "episodes=0"],
    }[case]
    expect = {"unknown option": "unknown option 'episode' (did you mean episodes?)",
              "unknown loop option": "unknown option 'resrl_agent.max_turn' (did you mean resrl_agent.max_turns",
              "missing model_path": "model_path is required",
              "missing file": f"tasks: file not found: {tmp_path / 'absent.parquet'}",
              "not an agent file": "is not an agent-task file (missing column(s) ['agent_name']",
              "bad value": "episodes must be an integer >= 1, got 0"}[case]
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "out" / "episodes.jsonl").exists()
