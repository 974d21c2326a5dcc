"""The eval's verl-checkpoint input (merged by verl's model merger) and its `compare={NAME:DIR}` option."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_fake_trainer import save_verl_checkpoint  # noqa: E402
from test_eval_cli import InProcessVerifier, benchmark_parquet, compose  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model saved twice: as verl's FSDP checkpoint (global_step_3/actor) and as an HF folder of the weights
    verl's merger can represent (it stores bf16, so the HF copy holds the same weights rounded to bf16)."""
    from transformers import AutoTokenizer

    from verl_resrl.tiny.model import build_model, save_model
    from verl_resrl.tiny.tokenizer import save_tokenizer

    root = tmp_path_factory.mktemp("ckpt")
    hf_dir = str(root / "hf")
    save_tokenizer(hf_dir)
    model = build_model()
    model.config.architectures = ["Qwen2ForCausalLM"]  # set by from_pretrained in verl; the merger reads it
    with torch.no_grad():  # a non-trivial perturbation, so the test is not about the seeded initialisation only
        for i, param in enumerate(model.parameters()):
            param.add_(0.01 * torch.sin(torch.arange(param.numel(), dtype=torch.float32) + i).view_as(param))
    rounded = build_model()
    rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
    save_model(rounded, hf_dir)
    actor = str(root / "exp_a" / "global_step_3" / "actor")
    save_verl_checkpoint(model, AutoTokenizer.from_pretrained(hf_dir), actor)
    return {"hf": hf_dir, "actor": actor, "root": root}


def token_log_probs(model_dir, ids):
    """log p(token t | tokens < t) of a fixed sequence batch under the model in ``model_dir``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(ids).logits[:, :-1]
    return torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def test_verl_checkpoint_is_recognised_and_validated(checkpoint, tmp_path):
    from verl_resrl.eval.checkpoint import checkpoint_world_size

    assert checkpoint_world_size(checkpoint["actor"]) == 1
    assert checkpoint_world_size(checkpoint["hf"]) is None  # an HF folder is used as it is
    broken = tmp_path / "actor"
    broken.mkdir()
    (broken / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": 2}))
    (broken / "model_world_size_2_rank_0.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"ranks \[1\]"):
        checkpoint_world_size(str(broken))


def test_merged_checkpoint_gives_the_log_probs_of_an_hf_save(checkpoint, tmp_path):
    from verl_resrl.eval.checkpoint import SOURCE_FILE, resolve_model_path

    merged = resolve_model_path(checkpoint["actor"], str(tmp_path))
    assert merged == str(tmp_path / "merged_model") and os.path.exists(os.path.join(merged, SOURCE_FILE))
    ids = torch.tensor([[3, 70, 45, 43, 55, 61, 49, 10, 200, 17, 33], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]])
    assert torch.equal(token_log_probs(merged, ids), token_log_probs(checkpoint["hf"], ids))
    stamp = os.path.getmtime(os.path.join(merged, "model.safetensors"))
    assert resolve_model_path(checkpoint["actor"], str(tmp_path)) == merged  # reused, not merged again
    assert os.path.getmtime(os.path.join(merged, "model.safetensors")) == stamp
    os.remove(os.path.join(merged, "config.json"))  # an incomplete merge is redone
    assert os.path.exists(os.path.join(resolve_model_path(checkpoint["actor"], str(tmp_path)), "config.json"))


def test_eval_cli_on_a_checkpoint_matches_the_hf_folder_and_compare_works(checkpoint, tmp_path_factory, monkeypatch):
    """Same samples from the checkpoint as from its HF save; `compare={NAME:DIR}` and `+compare.NAME=DIR` both work."""
    from verl_resrl.eval import runner

    monkeypatch.setattr(runner, "Verifier", InProcessVerifier)
    math500 = benchmark_parquet(tmp_path_factory, "math500", "math500.jsonl")
    common = [f"benchmarks=[{math500}]", "n=2", "sampling.max_new_tokens=6", "sampling.temperature=1.0"]
    out_hf, out_ck = tmp_path_factory.mktemp("hf_out"), tmp_path_factory.mktemp("ck_out")
    runner.run_eval(compose([f"model_path={checkpoint['hf']}", f"output_dir={out_hf}", "run_name=hf", *common]))
    summary = runner.run_eval(compose([f"model_path={checkpoint['actor']}", f"output_dir={out_ck}", *common,
                                       f"compare={{warmstart:{out_hf}}}"]))
    assert summary["run_name"] == "exp_a/global_step_3"
    responses = [
        [json.loads(line)["response"] for line in open(out / "samples" / "math500.jsonl")] for out in (out_hf, out_ck)
    ]
    assert responses[0] == responses[1] and len(responses[0]) == 6
    table = open(out_ck / "results.md").read()
    assert "| warmstart | math500 |" in table and "| exp_a/global_step_3 | math500 |" in table
    cfg = compose([f"model_path={checkpoint['hf']}", "output_dir=x", *common, f"+compare.warm={out_hf}"])
    assert dict(cfg.compare) == {"warm": str(out_hf)}
