"""The study's plan, its output-based completion checks, and the cluster form's dry run."""

import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "verl_resrl", "study", "config")


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return hydra_compose(config_name="study", overrides=overrides)


def test_default_grid_is_five_methods_by_three_seeds_with_paired_seeds(tmp_path):
    from verl_resrl.study.plan import plan_study

    plan = plan_study(compose(["+study=tiny", f"out_dir={tmp_path}"]))
    assert plan.methods() == ["grpo", "nsr", "w_reinforce", "resrl", "resrl_lambda1"] and plan.seeds() == [1, 2, 3]
    assert len(plan.runs) == 15 and [r.seed for r in plan.runs[:5]] == [1] * 5  # seed-major
    by_name = {r.name: r for r in plan.runs}
    resrl = by_name["resrl_s2"].overrides
    assert "algorithm.adv_estimator=resrl" in resrl and "algorithm.resrl.pos_weight=0.1" in resrl
    assert "algorithm.resrl.pos_weight=1.0" in by_name["resrl_lambda1_s2"].overrides
    assert "algorithm.w_reinforce_lambda=0.1" in by_name["w_reinforce_s1"].overrides
    for run in plan.runs:  # same budget, the run's own seed for data order and rollouts, its own folders
        assert f"data.seed={run.seed}" in run.overrides and f"actor_rollout_ref.rollout.seed={run.seed}" in run.overrides
        assert "trainer.total_training_steps=40" in run.overrides and "trainer.save_freq=40" in run.overrides
        assert f"trainer.default_local_dir={tmp_path}/runs/{run.name}/ckpt" in run.overrides
        assert run.recipe == "resrl_tiny" and run.actor_dir.endswith(f"{run.name}/ckpt/global_step_40/actor")


@pytest.mark.parametrize("override, message", [
    ("seeds=[1,1]", "distinct"), ("steps=0", "steps"), ("methods=null", "methods is empty"),
    ("+methods.warmstart.overrides=[]", "differ from"),
])
def test_bad_study_config_names_the_key(override, message, tmp_path):
    from verl_resrl.study.plan import plan_study

    with pytest.raises(ValueError, match=message):
        plan_study(compose(["+study=tiny", f"out_dir={tmp_path}", override]))


def fake_finished_run(run):
    """The files a finished run leaves (checkpoint layout of verl's FSDP manager, tracker, metrics)."""
    os.makedirs(os.path.join(run.actor_dir, "huggingface"))
    with open(os.path.join(run.actor_dir, "fsdp_config.json"), "w") as f:
        json.dump({"FSDP_version": 2, "world_size": 1}, f)
    open(os.path.join(run.actor_dir, "model_world_size_1_rank_0.pt"), "wb").close()
    open(os.path.join(run.actor_dir, "huggingface", "config.json"), "w").write("{}")
    open(os.path.join(run.ckpt_dir, "latest_checkpointed_iteration.txt"), "w").write(str(run.steps))
    with open(os.path.join(run.run_dir, "metrics.jsonl"), "w") as f:
        for step in range(1, run.steps + 1):
            f.write(json.dumps({"step": step}) + "\n")


def test_training_completion_is_read_from_the_outputs(tmp_path):
    from verl_resrl.study.outputs import training_status
    from verl_resrl.study.plan import plan_study

    run = plan_study(compose(["+study=tiny", f"out_dir={tmp_path}", "steps=3"])).runs[0]
    assert training_status(run) == (False, f"no verl checkpoint at {run.actor_dir}")
    fake_finished_run(run)
    assert training_status(run)[0]
    metrics = os.path.join(run.run_dir, "metrics.jsonl")
    lines = open(metrics).read().splitlines()
    open(metrics, "w").write("\n".join(lines[:2]) + "\n" + lines[2][:5])  # killed while writing step 3
    assert training_status(run) == (False, f"{metrics} has no record of step 3")
    fake_finished_run_again = lines
    open(metrics, "w").write("\n".join(fake_finished_run_again) + "\n")
    open(os.path.join(run.ckpt_dir, "latest_checkpointed_iteration.txt"), "w").write("2")
    assert "says step 2" in training_status(run)[1]
    open(os.path.join(run.ckpt_dir, "latest_checkpointed_iteration.txt"), "w").write("3")
    os.remove(os.path.join(run.actor_dir, "model_world_size_1_rank_0.pt"))
    assert "lacks model shards of ranks [0]" in training_status(run)[1]


def test_eval_completion_checks_model_n_and_prompts(tmp_path):
    from verl_resrl.study.outputs import eval_status

    out = tmp_path / "eval"
    assert not eval_status(str(out), "/m", 4, 2)[0]
    (out / "samples").mkdir(parents=True)
    results = {"config": {"model_path": "/m"}, "benchmarks": {"b": {"n": 4, "num_prompts": 2}}}
    (out / "results.json").write_text(json.dumps(results))
    assert eval_status(str(out), "/m", 4, 2) == (True, "results complete")
    assert "not /other" in eval_status(str(out), "/other", 4, 2)[1]
    assert "n=4, the study wants 8" in eval_status(str(out), "/m", 8, 2)[1]
    assert "2 prompts, the study wants 3" in eval_status(str(out), "/m", 4, 3)[1]
    # with the study's benchmark fingerprints: only an eval of exactly those files is finished
    assert "fingerprints differ" in eval_status(str(out), "/m", 4, 2, {"f1"})[1]
    (out / "samples" / "b.meta.json").write_text(json.dumps({"benchmark_fingerprint": "f1"}))
    assert eval_status(str(out), "/m", 4, 2, {"f1"}) == (True, "results complete")
    assert "fingerprints differ" in eval_status(str(out), "/m", 4, 2, {"f2"})[1]  # a rebuilt held-out set
    assert "fingerprints differ" in eval_status(str(out), "/m", 4, 2, {"f1", "f2"})[1]  # a benchmark missing
    (out / "samples" / "b.meta.json").write_text("{")
    assert "no valid" in eval_status(str(out), "/m", 4, 2, {"f1"})[1]
    # counts per benchmark (the tiny study's two held-out sets): each its own count, and no set missing or extra
    (out / "samples" / "b.meta.json").write_text(json.dumps({"benchmark_fingerprint": "f1"}))
    assert eval_status(str(out), "/m", 4, {"b": 2}, {"f1"}) == (True, "results complete")
    assert "the study wants 5" in eval_status(str(out), "/m", 4, {"b": 5})[1]
    assert "the study wants ['b', 'c']" in eval_status(str(out), "/m", 4, {"b": 2, "c": 3})[1]
    (out / "results.json").write_text('{"config": ')
    assert not eval_status(str(out), "/m", 4, 2)[0]


def test_math_study_dry_run_lists_every_job_with_recipe_and_seed(tmp_path, capsys):
    from verl_resrl.study.__main__ import run_study

    code = run_study(compose(["+study=math", "dry_run=true", f"out_dir={tmp_path}", "data_dir=/data"]))
    out = capsys.readouterr().out
    assert code == 0
    assert "15 runs: 5 methods x 3 seeds" in out
    recipes = {"grpo": "grpo_math", "nsr": "nsr_math", "w_reinforce": "w_reinforce_math", "resrl": "resrl_math",
               "resrl_lambda1": "resrl_math"}
    submits = [line for line in out.splitlines() if line.startswith("ray job submit")]
    assert len(submits) == 15
    for method, recipe in recipes.items():
        for seed in (1, 2, 3):
            assert f"# {method}_s{seed}: recipe={recipe} seed={seed}" in out
            job = next(s for s in submits if f"trainer.experiment_name={method}_s{seed} " in s + " ")
            assert f"+recipe={recipe}" in job and f"data.seed={seed}" in job and "--no-wait" in job
    evals = [line for line in out.splitlines() if " -m verl_resrl.eval " in line]
    assert len(evals) == 15 and all("n=128" in e and "/data/aime2024.parquet" in e for e in evals)


def _tiny_parquets(tmp_path, max_terms=4):
    """A train and a val split of the tiny task (no model): what the held-out writers read."""
    from verl_resrl.tiny.task import ArithTaskConfig, generate_splits, write_parquet

    splits = generate_splits(ArithTaskConfig(num_val=40, num_train=64, num_sft=0, max_terms=max_terms))
    paths = {}
    for name in ("train", "val"):
        paths[name] = str(tmp_path / f"{name}.parquet")
        write_parquet(splits[name], name, paths[name])
    return paths


def test_long_heldout_set_is_unseen_longer_distinct_and_stable(tmp_path):
    import pandas as pd

    from verl_resrl.study.heldout import LONG_SOURCE, write_tiny_long_heldout

    paths = _tiny_parquets(tmp_path)
    out = str(tmp_path / "long.parquet")
    assert write_tiny_long_heldout(paths["train"], out, terms=5, num_prompts=20, seed=5) == 20
    frame = pd.read_parquet(out)
    assert set(frame["data_source"]) == {LONG_SOURCE} and len(set(frame["extra_info"].map(lambda e: e["expression"]))) == 20
    for expr, truth in zip(frame["extra_info"].map(lambda e: e["expression"]),
                           frame["reward_model"].map(lambda r: r["ground_truth"])):
        assert len([c for c in expr if c.isdigit()]) == 5 and int(truth) == eval(expr)  # noqa: S307 - digits and +-
    mtime = os.path.getmtime(out)
    write_tiny_long_heldout(paths["train"], out, terms=5, num_prompts=20, seed=5)
    assert os.path.getmtime(out) == mtime  # unchanged: the evals' fingerprints stay valid
    write_tiny_long_heldout(paths["train"], out, terms=5, num_prompts=20, seed=6)
    assert not pd.read_parquet(out).equals(frame)  # another seed, other problems
    with pytest.raises(ValueError, match="heldout.long_terms=4: the training split has problems with up to 4"):
        write_tiny_long_heldout(paths["train"], out, terms=4, num_prompts=20, seed=5)
    with pytest.raises(ValueError, match="heldout.long_prompts must be >= 1"):
        write_tiny_long_heldout(paths["train"], out, terms=5, num_prompts=0, seed=5)


def test_in_distribution_heldout_set_is_the_val_subset(tmp_path):
    import pandas as pd

    from verl_resrl.study.heldout import write_tiny_heldout

    paths = _tiny_parquets(tmp_path)
    out = str(tmp_path / "heldout.parquet")
    count = write_tiny_heldout(paths["val"], out, min_terms=3, num_prompts=10)
    val, frame = pd.read_parquet(paths["val"]), pd.read_parquet(out)
    long_enough = val[val["extra_info"].map(lambda e: e["num_terms"] >= 3)]
    assert count == 10 and list(frame["extra_info"].map(lambda e: e["expression"])) == \
        list(long_enough["extra_info"].map(lambda e: e["expression"]))[:10]
    with pytest.raises(ValueError, match="only .* val problems have >= 3 terms, num_prompts=1000"):
        write_tiny_heldout(paths["val"], out, min_terms=3, num_prompts=1000)
