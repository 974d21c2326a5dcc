"""TextWorldExpress behind the adapter, the environment pool (JVMs reused, a killed or hung one replaced), and the
``twx_twc_tiny`` rows.

Expected values come from TWX itself, not from the code under test: the gold path is TWX's own
(``generateGoldPath``), success is TWX's ``tasksuccess``, the reply to an unknown command is what the wheel's own
``TextWorldExpressEnv`` answers when stepped directly. A few JVMs are started (0.4-0.6 s each) and every one is
checked gone at the end.
"""

import logging
import os
import re
import signal
import threading
import time

import pandas as pd
import pytest

pytest.importorskip("textworld_express")

from verl_resrl.agents import env_pool  # noqa: E402
from verl_resrl.agents.env_pool import EnvPool, EpisodeLost  # noqa: E402
from verl_resrl.agents.textworld_express import FOLDS, TwxAdapter, parse_task_id, twx_task_id  # noqa: E402
from verl_resrl.data import agent_envs  # noqa: E402

pytestmark = pytest.mark.timeout(120)
TINY = {"numLocations": 1, "numItemsToPutAway": 2, "includeDoors": 0}
TASK = twx_task_id("twc", "train", 3, **TINY)


def java_children() -> list[int]:
    """Live (not zombie) child processes of this test process that run java."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"java" in cmd:
            out.append(int(pid))
    return out


def assert_no_jvm_left(before: set[int], wait_s: float = 5.0) -> None:
    """Every java child started since ``before`` (a ``java_children()`` snapshot) is gone within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while set(java_children()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(java_children()) - before


def gone(pid: int) -> bool:
    """The process no longer runs (reaped or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="module", autouse=True)
def no_jvm_left():
    """Every JVM this module starts is gone when it ends (autouse: torn down after the other fixtures)."""
    before = set(java_children())
    yield
    assert_no_jvm_left(before)


@pytest.fixture(scope="module")
def adapter():
    a = TwxAdapter()
    yield a
    a.close()


@pytest.fixture(scope="module")
def wheel_env():
    """The wheel's own env, stepped directly: the independent reference."""
    from textworld_express import TextWorldExpressEnv

    env = TextWorldExpressEnv(envStepLimit=10**9)
    yield env
    from verl_resrl.agents.env_adapter import kill_wheel_env

    kill_wheel_env(env)


# ------------------------------------------------------------------------------------------------------ task ids


def test_task_ids_are_validated_and_name_the_problem():
    assert TASK == "twx:twc:train:3:includeDoors=0,numItemsToPutAway=2,numLocations=1"  # keys sorted: one id a game
    assert parse_task_id(TASK).seed == 3 and parse_task_id(TASK).task_id == TASK
    with pytest.raises(ValueError, match=r"seed 5 is outside the dev fold's seeds 10000-10999"):
        twx_task_id("twc", "dev", 5, **TINY)
    with pytest.raises(ValueError, match=r"seed 10000 is outside the train fold's seeds 0-999"):
        parse_task_id("twx:twc:train:10000:numLocations=1")
    with pytest.raises(ValueError, match="unknown game 'zork'"):
        parse_task_id("twx:zork:train:1:numLocations=1")
    with pytest.raises(ValueError, match="fold must be one of"):
        parse_task_id("twx:twc:valid:1:numLocations=1")
    with pytest.raises(ValueError, match="must be 'twx:GAME:FOLD:SEED:PARAMS'"):
        parse_task_id("twx:twc:train:1")
    with pytest.raises(ValueError, match="PARAMS must be"):
        parse_task_id("twx:twc:train:1:numLocations")


# ------------------------------------------------------------------------------------------------------ adapter


def test_gold_path_succeeds(adapter):
    first = adapter.reset(TASK, gold=True)
    gold = adapter.gold_actions()
    assert first.task.startswith("Your task is to pick up objects")
    assert len(gold) >= 3 and all(a in first.admissible for a in gold[:2])  # TWX's own path, from its start
    results = [adapter.step(a) for a in gold]
    assert [r.done for r in results] == [False] * (len(gold) - 1) + [True]
    assert results[-1].success and results[-1].score == 1.0
    assert all(not r.invalid for r in results)
    assert [r.score for r in results] == sorted(r.score for r in results)  # a share per subgoal, never back


def test_a_wrong_placement_fails(adapter):
    """Taking an item and putting it in a place TWX does not count: score back to 0, no success."""
    first = adapter.reset(TASK, gold=True)
    gold = adapter.gold_actions()
    take = next(a for a in gold if a.startswith("take "))
    item = take[len("take "):]
    right = next(a for a in gold if a.startswith(f"put {item} in "))
    taken = adapter.step(take)
    assert taken.score > 0 and not taken.done
    wrong = next(a for a in taken.admissible if a.startswith(f"put {item} in ") and a != right
                 and "washing machine" not in a)  # (dirty clothes also count in the washer)
    placed = adapter.step(wrong)
    assert placed.observation.startswith("You put") and placed.score == 0.0
    assert not placed.success and not placed.done
    assert first.admissible != taken.admissible


def test_episodes_are_deterministic_by_task_id(adapter):
    a = adapter.reset(TASK)
    adapter.step("take " + a.observation.split("There is also a ")[-1].split(".")[0])  # play something, then again
    b = adapter.reset(TASK)
    assert a == b
    other = adapter.reset(twx_task_id("twc", "train", 4, **TINY))
    assert other.observation != a.observation  # the seed matters, so the equality above could fail


def test_a_fresh_jvm_gives_the_same_game(adapter):
    a = adapter.reset(TASK, gold=True)
    gold = adapter.gold_actions()
    other = TwxAdapter()
    try:
        assert other.pid != adapter.pid
        assert other.reset(TASK, gold=True) == a and other.gold_actions() == gold
    finally:
        other.close()


def test_unknown_actions_get_twx_own_reply(adapter, wheel_env):
    wheel_env.reset(seed=3, gameFold="train", gameName="twc", gameParams="numLocations=1,numItemsToPutAway=2,"
                    "includeDoors=0")
    reference = wheel_env.step("fly to the moon")[0]
    adapter.reset(TASK)
    for action in ("fly to the moon", "x" * 100_000, "take\x00\x1b[31m teal"):
        r = adapter.step(action)
        assert r.observation == reference and r.invalid and r.score == 0.0 and not r.done
    assert not adapter.step("look around").invalid


# --------------------------------------------------------------------------------------------------------- pool


def play_gold(ep) -> float:
    """Reset with the gold path and play it; the final score."""
    ep.reset(gold=True)
    result = None
    for action in ep.call("gold_actions"):
        result = ep.step(action)
    return result.score if result.success else -1.0


def test_pool_reuses_one_jvm_across_episodes():
    pool = EnvPool(max_envs=2)
    try:
        pids = []
        for seed in (3, 4, 5):
            with pool.episode(twx_task_id("twc", "train", seed, **TINY)) as ep:
                assert play_gold(ep) == 1.0
                pids.append(ep.pid)
        assert len(set(pids)) == 1 and pool.stats.started == 1 and pool.stats.episodes == 3
    finally:
        pool.close()
    assert gone(pids[0]) and pool.live("twx") == 0


def test_a_killed_jvm_costs_its_episode_only(caplog):
    pool = EnvPool(max_envs=1)
    try:
        ep = pool.episode(TASK)
        ep.reset(gold=True)
        gold = ep.call("gold_actions")
        ep.step(gold[0])
        pid = ep.pid
        os.kill(pid, signal.SIGKILL)
        with caplog.at_level(logging.WARNING, logger=env_pool.__name__):
            with pytest.raises(EpisodeLost, match=re.escape(f"pid {pid}) lost in episode '{TASK}': step failed")):
                ep.step(gold[1])
        assert any("killed and replaced" in r.getMessage() and str(pid) in r.getMessage() for r in caplog.records)
        with pytest.raises(EpisodeLost):  # the episode stays lost
            ep.step(gold[1])
        ep.close()
        with pool.episode(TASK) as again:  # the next episode gets a fresh JVM and wins
            assert play_gold(again) == 1.0 and again.pid != pid
        assert pool.stats.started == 2 and len(pool.stats.lost) == 1 and gone(pid)
    finally:
        pool.close()


def _state(pid: int) -> str:
    """The process state letter from /proc (T: stopped)."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def test_a_hung_jvm_is_killed_at_the_step_limit():
    pool = EnvPool(max_envs=1, step_timeout_s=1.5)
    try:
        with pool.episode(TASK) as ep:
            ep.reset()
            pid = ep.pid
            os.kill(pid, signal.SIGSTOP)  # alive but silent
            # kill() returns before every JVM thread has stopped; on a loaded machine a step sent at once was
            # answered (seen once in a fresh-clone suite run), so wait for the stop to show in /proc first
            deadline = time.monotonic() + 5
            while _state(pid) != "T" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _state(pid) == "T"
            t0 = time.monotonic()
            with pytest.raises(EpisodeLost, match="took longer than 1.5 s"):
                ep.step("look around")
            assert time.monotonic() - t0 < 5
        assert gone(pid)
        with pool.episode(TASK) as again:
            assert play_gold(again) == 1.0
    finally:
        pool.close()


def test_pool_refuses_bad_ids_before_starting_anything_and_caps_live_envs():
    pool = EnvPool(max_envs=1)
    try:
        with pytest.raises(ValueError, match="outside the test fold"):
            pool.episode("twx:twc:test:3:numLocations=1")
        assert pool.stats.started == 0
        first = pool.episode(TASK)
        got = []
        waiter = threading.Thread(target=lambda: got.append(pool.episode(TASK)))
        waiter.start()
        time.sleep(0.3)
        assert not got and pool.live("twx") == 1  # the second episode waits for the only environment
        first.close()
        waiter.join(10)
        assert got and got[0].slot is first.slot
        got[0].close()
    finally:
        pool.close()


# --------------------------------------------------------------------------------------------------------- data


def test_twx_rows_keep_the_folds_apart(tmp_path, adapter):
    from verl_resrl.data.__main__ import main

    assert main(["--out-dir", str(tmp_path), "--only", "twx_twc_tiny"]) == 0
    frames = {s: pd.read_parquet(tmp_path / f"twx_twc_tiny_{s}.parquet") for s in ("train", "dev", "test")}
    ids = {}
    for split, df in frames.items():
        assert len(df) == 1000 and set(df["agent_name"]) == {"resrl_text_env"}
        infos = list(df["extra_info"])
        assert all(i["split"] == split and i["seed"] in FOLDS[split] for i in infos)
        assert sorted(parse_task_id(i["task_id"]).params.count("numItemsToPutAway=2") for i in infos) == \
            [0] * 500 + [1] * 500  # half the games with 1 item, half with 2
        ids[split] = {i["task_id"] for i in infos}
        assert len(ids[split]) == 1000
        assert all(parse_task_id(t).fold == split and "numLocations=1" in t and "includeDoors=0" in t
                   for t in ids[split])
        assert list(df["prompt"].iloc[0][0].keys()) == ["role", "content"]
        assert "Action: <command>" in df["prompt"].iloc[0][0]["content"]
    assert not (ids["train"] & ids["dev"]) and not (ids["train"] & ids["test"]) and not (ids["dev"] & ids["test"])
    row = frames["dev"].iloc[7]["extra_info"]  # a written row plays as its id says
    adapter.reset(row["task_id"], gold=True)
    assert [adapter.step(a) for a in adapter.gold_actions()][-1].success
    # verl's own dataset (as data.custom_cls names it) reads the rows: the loop gets raw_prompt, agent_name, task_id
    from omegaconf import OmegaConf

    from verl_resrl.agents.agent_loop import TextEnvRLHFDataset
    from verl_resrl.tiny.tokenizer import build_tokenizer

    sci = tmp_path / "sciworld_dev.parquet"  # a ScienceWorld file beside it (its splits given, no JVM needed)
    agent_envs.write_agent_rows(agent_envs.sciworld_rows({"boil": {"train": [0], "dev": [14, 15], "test": [21]}})
                                ["dev"], str(sci))
    cfg = OmegaConf.create({"max_prompt_length": 512, "return_raw_chat": True, "cache_dir": str(tmp_path / "cache")})
    ds = TextEnvRLHFDataset(data_files=[str(tmp_path / "twx_twc_tiny_dev.parquet"), str(sci)],
                            tokenizer=build_tokenizer(), config=cfg)
    item = ds[7]
    assert len(ds) == 1002 and item["agent_name"] == "resrl_text_env" and item["extra_info"]["task_id"] == row["task_id"]
    assert item["raw_prompt"] == list(frames["dev"].iloc[7]["prompt"])
    assert ds[1001]["extra_info"]["task_id"] == "sciworld:boil:dev:15" and ds[1001]["data_source"] == "sciworld"
