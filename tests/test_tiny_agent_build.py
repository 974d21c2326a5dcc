"""The tiny agent task (``verl_resrl.tiny_agent``): its rows, its gold transcripts against the real agent loop, the
committed warm start, the recipe's options, and the launcher hook. Fast: one TWX JVM, no Ray, no training."""

import hashlib
import json
import os

import pytest
from omegaconf import OmegaConf

pytest.importorskip("textworld_express")

from test_agents_loop import config as loop_config  # noqa: E402  (the keys the loop reads)
from test_agents_loop import ScriptedServer  # noqa: E402  (verl's server contract: scripted replies as token ids)
from test_agents_twx import assert_no_jvm_left, java_children  # noqa: E402
from verl_resrl.agents.agent_loop import parse_options  # noqa: E402
from verl_resrl.agents.env_pool import EnvPool  # noqa: E402
from verl_resrl.agents.textworld_express import TwxAdapter  # noqa: E402
from verl_resrl.tiny import committed  # noqa: E402
from verl_resrl.tiny.warmstart import IGNORE_INDEX  # noqa: E402
from verl_resrl.tiny_agent import build, task, warmstart  # noqa: E402
from verl_resrl.tiny_agent.launch import prepare_tiny_agent_assets  # noqa: E402

pytestmark = pytest.mark.timeout(180)
RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "resrl_tiny_agent.yaml")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build.save_agent_tokenizer(str(tmp_path_factory.mktemp("agent_tok")))


@pytest.fixture(scope="module")
def twx():
    """One adapter and one pool (the loop's), every JVM checked gone at the end."""
    before = set(java_children())
    adapter, pool = TwxAdapter(), EnvPool(max_envs=1, step_timeout_s=10)
    yield adapter, pool
    adapter.close()
    pool.close()
    assert_no_jvm_left(before)


def run_row(tokenizer, pool, row, script, cfg):
    """One episode of ``row`` (its own prompt and task) through the registered loop, as verl's worker runs it."""
    import asyncio

    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap

    from verl_resrl.agents.agent_loop import TextEnvAgentLoop

    server = ScriptedServer(tokenizer, script)
    kwargs = {"raw_prompt": list(row["prompt"]), "extra_info": row["extra_info"], "data_source": row["data_source"],
              "agent_name": row["agent_name"], "index": 0}

    async def go():
        loop = TextEnvAgentLoop(trainer_config=DictConfigWrap(cfg), server_manager=server, tokenizer=tokenizer,
                                processor=None, dataset_cls=None, data_config=DictConfigWrap(cfg.data),
                                hf_model_type="qwen2", tools=ToolListWrap([]))
        loop.pool = pool
        return await loop.run({"temperature": 1.0, "logprobs": True}, **kwargs)

    return asyncio.run(go())


def test_rows_are_deterministic_one_item_and_split_by_fold():
    cfg = task.AgentTaskConfig()
    rows, again = task.generate_rows(cfg), task.generate_rows(cfg)
    assert rows == again
    train, val = rows["train"], rows["val"]
    assert len(train) == cfg.num_train == 500 and len(val) == 64
    # TWX's folds, one-item games (the even seeds), indexed by position, nothing shared between the splits
    assert [r["extra_info"]["seed"] for r in train] == list(range(0, 1000, 2))
    assert [r["extra_info"]["seed"] for r in val] == list(range(10000, 10128, 2))
    for split, rs in rows.items():
        assert [r["extra_info"]["index"] for r in rs] == list(range(len(rs)))
        for r in rs:
            tid = r["extra_info"]["task_id"]
            assert tid.startswith(f"twx:twc:{'train' if split == 'train' else 'dev'}:{r['extra_info']['seed']}:")
            assert tid.endswith(":includeDoors=0,numItemsToPutAway=1,numLocations=1")
            assert r["agent_name"] == "resrl_text_env" and r["data_source"] == task.DATA_SOURCE
    assert not {r["extra_info"]["task_id"] for r in train} & {r["extra_info"]["task_id"] for r in val}
    assert task.sft_rows(cfg) == train[: cfg.num_sft]


def test_rows_round_trip_through_parquet(tmp_path):
    import pandas as pd

    rows = task.generate_rows(task.AgentTaskConfig(num_val=4))["val"]
    task.write_rows(rows, str(tmp_path / "val.parquet"))
    back = pd.read_parquet(tmp_path / "val.parquet")
    assert list(back["extra_info"].map(lambda e: e["task_id"])) == [r["extra_info"]["task_id"] for r in rows]


@pytest.mark.parametrize("seed_index", [0, 1, 5])
def test_a_gold_transcript_is_what_the_real_loop_builds(tokenizer, twx, seed_index):
    """The warm start's example is the loop's own episode token for token, labels exactly where its mask is 1."""
    adapter, pool = twx
    cfg = task.AgentTaskConfig()
    row = task.sft_rows(cfg)[seed_index]
    tid = row["extra_info"]["task_id"]
    messages = task.gold_transcript(adapter, row, build.AGENT_OPTIONS, cfg)
    # independent of the transcript: TWX's own gold path, with its opening "look around" left out
    adapter.reset(tid, gold=True)
    gold = adapter.gold_actions()
    assert gold[0] == "look around"
    actions = [m["content"] for m in messages if m["role"] == "assistant"]
    assert actions == ["Action: " + a for a in gold[1:]]
    ids, labels, n_prompt = warmstart.encode_transcript(tokenizer, messages)

    options = {k: getattr(build.AGENT_OPTIONS, k) for k in ("max_turns", "max_tokens_per_turn",
                                                           "max_observation_chars", "max_admissible_shown")}
    # the model's turns as the server returns them: the text, then <|im_end|> (ScriptedServer adds it)
    out = run_row(tokenizer, pool, row, actions, loop_config(build.RESPONSE_LENGTH, **options))
    assert out.reward_score == 1.0 and out.extra_fields["agent_end"] == "done"
    assert out.prompt_ids + out.response_ids == ids and len(out.prompt_ids) == n_prompt
    assert out.response_mask == [int(lab != IGNORE_INDEX) for lab in labels[n_prompt:]]
    assert len(out.response_ids) <= build.RESPONSE_LENGTH


def test_the_recipe_runs_the_loop_with_the_build_options():
    recipe = OmegaConf.load(RECIPE)
    assert parse_options(OmegaConf.to_container(recipe.resrl_agent)) == build.AGENT_OPTIONS
    assert recipe.data.max_response_length == build.RESPONSE_LENGTH
    assert recipe.data.custom_cls.name == "TextEnvRLHFDataset"
    record = committed.find(build.TASK, build.TinyAgentBuildSettings().digest())
    assert record is not None, "the default settings changed without a new publish (--retrain --publish)"
    facts = record["facts"]
    assert facts["max_prompt_tokens"] <= recipe.data.max_prompt_length
    assert facts["max_response_tokens"] <= recipe.data.max_response_length
    assert build.TinyAgentBuildSettings().model.max_position_embeddings >= (
        recipe.data.max_prompt_length + recipe.data.max_response_length)
    with pytest.raises(ValueError, match="max_turn"):
        parse_options({"max_turn": 3})  # a misspelt option is refused by name


def test_the_committed_weights_install_and_match_their_checksum(tmp_path):
    settings = build.TinyAgentBuildSettings()
    record = committed.find(build.TASK, settings.digest())
    weights = os.path.join(committed.WARM_STARTS_DIR, build.TASK, committed.WEIGHTS_FILE)
    assert hashlib.sha256(open(weights, "rb").read()).hexdigest() == record["file_sha256"]
    assert record["settings"] == json.loads(json.dumps(settings.as_dict()))
    assets = build.ensure_tiny_agent_assets(str(tmp_path / "assets"))
    assert assets.facts["weights_source"].startswith("committed")
    from safetensors.torch import load_file

    from verl_resrl.tiny.model import build_model, weights_sha256

    model = build_model(settings.model)
    model.load_state_dict(load_file(os.path.join(assets.model_dir, "model.safetensors")), strict=False)
    model.tie_weights()
    assert weights_sha256(model) == record["facts"]["weights_sha256"]
    # the committed build's own figures are in range
    assert 0.0 <= record["facts"]["greedy_success"] <= 1.0 and record["facts"]["num_sft"] == settings.task.num_sft


def test_bad_settings_and_options_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="num_val"):
        task.AgentTaskConfig(num_val=0)
    with pytest.raises(ValueError, match="num_sft"):
        task.AgentTaskConfig(num_sft=501)
    with pytest.raises(ValueError, match="samples"):
        warmstart.AgentEvalConfig(samples=-1)
    cfg = OmegaConf.create({"resrl_tiny_agent": {"enable": True, "data_dir": str(tmp_path), "rebuld": True},
                            "trainer": {"dry_run": True}})
    with pytest.raises(ValueError, match="rebuld"):
        prepare_tiny_agent_assets(cfg)
    with pytest.raises(SystemExit):
        build.main(["--out", str(tmp_path / "x"), "--publish"])  # --publish needs --retrain


def test_a_dry_run_builds_nothing_and_fills_the_placeholders(tmp_path):
    cfg = OmegaConf.create({"resrl_tiny_agent": {"enable": True, "data_dir": str(tmp_path / "a")},
                            "trainer": {"dry_run": True},
                            "data": {"train_files": "resrl_tiny_agent", "val_files": "resrl_tiny_agent"},
                            "actor_rollout_ref": {"model": {"path": "resrl_tiny_agent"}}})
    planned = prepare_tiny_agent_assets(cfg)
    assert not (tmp_path / "a").exists()
    assert "install the committed warm start" in planned.action
    assert cfg.data.train_files == str(tmp_path / "a" / "train.parquet")
    assert cfg.data.val_files == str(tmp_path / "a" / "val.parquet")
    assert cfg.actor_rollout_ref.model.path == str(tmp_path / "a" / "model")
    assert prepare_tiny_agent_assets(OmegaConf.create({"resrl_tiny_agent": {"enable": False}})) is None
