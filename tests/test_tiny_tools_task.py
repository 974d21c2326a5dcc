"""The tiny tool task without Ray: task and transcripts, the calculator tool, the chat template, the warm-start
layout against verl's own ToolAgentLoop, the reward, the multi-turn evaluation loop and the step metrics.

Expected values are written out by hand (the transcript strings, the calculator results) or come from verl's own
code run on the same inputs (ToolAgentLoop, its Hermes parser and continuous-token builder, its tool registry).
"""

import asyncio
import json

import pytest
import torch
from transformers import AutoTokenizer

from verl_resrl.tiny import model as tiny_model
from verl_resrl.tiny_tools import task, warmstart
from verl_resrl.tiny_tools.calculator import CalcError, calc_response, evaluate
from verl_resrl.tiny_tools.chat_template import save_tools_tokenizer
from verl_resrl.tiny_tools.reward import compute_score
from verl_resrl.tiny_tools.trainer_hooks import mask_runs, tool_metrics

P = task.ArithProblem((7, 5, 9, 3), ("+", "-", "+"))  # 7+5=12, 12-9=3, 3+3=6
GOLD_TOOL = (
    "<|im_start|>user\nCompute 7+5-9+3.<|im_end|>\n<|im_start|>assistant\n"
    '<tool_call>{"name": "calc", "arguments": {"expr": "7+5-9+3"}}</tool_call><|im_end|>\n'
    "<|im_start|>tool\n6<|im_end|>\n<|im_start|>assistant\n"
    "Answer: 6<|im_end|>\n"
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The tools tokenizer saved next to a qwen2 config, loaded as verl loads it."""
    model_dir = tmp_path_factory.mktemp("tools_tok")
    save_tools_tokenizer(str(model_dir))
    tiny_model.qwen2_config(tiny_model.TinyModelConfig()).save_pretrained(str(model_dir))
    return AutoTokenizer.from_pretrained(str(model_dir))


# ------------------------------------------------------------------------------------------------ task, template


def test_gold_turns_send_the_chain_in_one_call_then_answer():
    assert task.calls(P) == [("7+5-9+3", 6)]
    texts = [t for t, _ in task.turns(P, use_tool=True)]
    assert texts[-1] == "Answer: 6" and [o for _, o in task.turns(P, True)] == ["6", None]
    assert texts[0] == '<tool_call>{"name": "calc", "arguments": {"expr": "7+5-9+3"}}</tool_call>'
    assert task.turns(P, use_tool=False) == [("Answer: 6", None)]


def test_every_gold_transcript_reaches_the_answer(tokenizer):
    splits = task.generate_splits(task.ArithTaskConfig(num_train=64, num_sft=64))
    for problem in splits["val"] + splits["train"]:
        total = problem.operands[0]  # independent left-to-right evaluation
        for op, value in zip(problem.ops, problem.operands[1:]):
            total = total + value if op == "+" else total - value
        ((expr, result),) = task.calls(problem)
        assert f"Compute {expr}." == problem.question() and evaluate(expr) == result == total == problem.answer >= 0


def test_chat_template_renders_tool_calls_and_tool_messages(tokenizer):
    messages = task.transcript_messages(P, use_tool=True)
    assert tokenizer.apply_chat_template(messages, tokenize=False) == GOLD_TOOL
    # a prefix of the conversation renders to a token prefix (verl's continuous-token suffix diffs rely on it)
    full = tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
    for k in range(1, len(messages)):
        prefix = tokenizer.apply_chat_template(messages[:k], tokenize=True)["input_ids"]
        assert full[: len(prefix)] == prefix
    # a call whose arguments are a JSON string renders the same text
    as_string = [dict(m) for m in messages]
    as_string[1] = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "calc", "arguments": '{"expr": "7+5-9+3"}'}}]}
    assert tokenizer.apply_chat_template(as_string, tokenize=False) == GOLD_TOOL


def test_rows_route_to_the_tool_agent_loop(tmp_path):
    import pandas as pd

    path = tmp_path / "val.parquet"
    task.write_parquet([P], "val", str(path))
    row = pd.read_parquet(path).iloc[0]
    assert row["agent_name"] == "tool_agent" and row["data_source"] == "resrl_tiny_tools/arith"
    assert row["reward_model"]["ground_truth"] == "6" and row["extra_info"]["num_tool_calls"] == 1


# ------------------------------------------------------------------------------------------------ the calculator


@pytest.mark.parametrize("expr, value", [("7+5", 12), ("12-9", 3), (" 3 * 4 ", 12), ("8/2", 4), ("-3+1", -2),
                                         ("7+5-9+3", 6), ("2+3*4", 20), ("8/2*3", 12), ("5--3", 8),
                                         ("+".join("1" * 9), 9)])
def test_calculator_values(expr, value):
    """Left to right, as the task's chains (2+3*4 is 20, not 14); 8 operations at most."""
    assert evaluate(expr) == value


@pytest.mark.parametrize("expr", ["8/3", "1/0", "6/2/0", "__import__('os').system('x')", "7", "2**99", "1+",
                                  "+".join("1" * 10), "1234567+1", "1" * 40, "7+5=12", "(1+2)", None, 12, ["7+5"]])
def test_calculator_refuses_anything_but_an_integer_chain(expr):
    with pytest.raises(CalcError):
        evaluate(expr)


def test_calc_response_reports_errors_as_text():
    assert calc_response({"expr": "7+5"}) == ("12", True)
    for bad in ({"x": "7+5"}, {"expr": "7+5", "b": 1}, "7+5", {"expr": "7^5"}):
        text, ok = calc_response(bad)
        assert not ok and text.startswith("error:")


def test_tool_loads_from_the_yaml_through_verls_registry_and_counts_calls():
    from verl.tools.tool_registry import initialize_tools_from_config

    from verl_resrl.tiny_tools.build import TOOL_CONFIG
    from verl_resrl.tiny_tools.tools import CalcTool

    (tool,) = initialize_tools_from_config(TOOL_CONFIG)
    assert isinstance(tool, CalcTool) and tool.name == "calc"
    assert tool.tool_schema.function.parameters.required == ["expr"]

    class AgentData:
        extra_fields = {}

    async def calls():
        iid, _ = await tool.create()
        ok = await tool.execute(iid, {"expr": "12-9"}, agent_data=AgentData)
        bad = await tool.execute(iid, {"expr": "12-"}, agent_data=AgentData)
        await tool.release(iid)
        return ok, bad

    (ok, _, _), (bad, _, _) = asyncio.run(calls())
    assert ok.text == "3" and bad.text.startswith("error:")
    assert AgentData.extra_fields == {"calc_calls": 2, "calc_errors": 1}


# ------------------------------------------------------------------- the warm-start layout is verl's rollout layout


def test_sft_example_is_the_rendered_transcript_with_loss_on_the_model_tokens_only(tokenizer):
    ids, labels = warmstart.encode_example(tokenizer, P, use_tool=True)
    # the runtime stops at <|im_end|>; the template adds "\n" after the last turn
    assert tokenizer.decode(ids) + "\n" == GOLD_TOOL
    spans, current = [], []
    for i, lab in zip(ids, labels):
        if lab == -100:
            if current:
                spans.append(tokenizer.decode(current))
            current = []
        else:
            assert lab == i
            current.append(i)
    spans.append(tokenizer.decode(current))
    assert spans == [t + "<|im_end|>" for t, _ in task.turns(P, True)]
    direct_ids, direct_labels = warmstart.encode_example(tokenizer, P, use_tool=False)
    assert tokenizer.decode([i for i, lab in zip(direct_ids, direct_labels) if lab != -100]) == "Answer: 6<|im_end|>"


class ScriptedServer:
    """verl's LLMServerClient contract, answering each turn with the gold transcript's next assistant turn."""

    def __init__(self, tokenizer, problem, turns=None):
        self.tokenizer, self.prompts = tokenizer, []
        self.turns = turns if turns is not None else task.turns(problem, True)

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.prompts.append(list(prompt_ids))
        k = self.tokenizer.decode(prompt_ids).count("<|im_start|>tool")  # turns answered so far
        ids = self.tokenizer.encode(self.turns[k][0], add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return TokenOutput(token_ids=ids, log_probs=[-0.25] * len(ids), extra_fields={"global_steps": 0})


def run_tool_agent_loop(tokenizer, problem, turns=None):
    """verl's ToolAgentLoop, configured by the recipe, with the real CalcTool and a scripted server."""
    from hydra import compose, initialize_config_module
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
    from verl.experimental.agent_loop.tool_agent_loop import ToolAgentLoop
    from verl.tools.tool_registry import initialize_tools_from_config
    from verl.utils.dataset.rl_dataset import RLHFDataset

    import verl_resrl.main_ppo  # noqa: F401 - registers the recipes
    from verl_resrl.tiny_tools.build import TOOL_CONFIG

    with initialize_config_module("verl_resrl.config", version_base=None):
        config = compose("resrl_trainer", overrides=["+recipe=resrl_tiny_tools"])
    server = ScriptedServer(tokenizer, problem, turns)

    async def go():
        loop = ToolAgentLoop(trainer_config=DictConfigWrap(config), server_manager=server, tokenizer=tokenizer,
                             processor=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data),
                             hf_model_type="qwen2", tools=ToolListWrap(initialize_tools_from_config(TOOL_CONFIG)))
        return await loop.run({"temperature": 1.0, "logprobs": True}, raw_prompt=task.prompt_messages(problem),
                              extra_info={}, tools_kwargs={})

    return asyncio.run(go()), server


def test_verls_tool_agent_loop_produces_the_warm_start_layout(tokenizer):
    out, server = run_tool_agent_loop(tokenizer, P)
    ids, labels = warmstart.encode_example(tokenizer, P, use_tool=True)
    n_prompt = len(warmstart.prompt_ids(tokenizer, P))
    assert out.prompt_ids == ids[:n_prompt] and out.response_ids == ids[n_prompt:]
    # response_mask 1 exactly on the model's tokens, 0 on every tool-output and boundary token
    assert out.response_mask == [int(lab != -100) for lab in labels[n_prompt:]]
    masked = tokenizer.decode([t for t, m in zip(out.response_ids, out.response_mask) if m == 0])
    assert masked == "\n<|im_start|>tool\n6<|im_end|>\n<|im_start|>assistant\n"
    # the server's log-probs on the model's tokens, 0.0 on the context tokens
    assert [lp for lp, m in zip(out.response_logprobs, out.response_mask)] == [
        -0.25 if m else 0.0 for m in out.response_mask]
    assert out.num_turns == 4  # 2 assistant + 1 tool turn + 1, verl's count
    assert out.extra_fields["calc_calls"] == 1 and out.extra_fields["calc_errors"] == 0
    assert len(server.prompts) == 2 and server.prompts[-1] == ids[: len(server.prompts[-1])]
    # the trainer hook counts the same round from the mask alone
    assert mask_runs(torch.tensor(out.response_mask)) == 1


def test_two_tool_rounds_keep_every_tool_output_masked(tokenizer):
    """A rollout that calls twice (the model may split the chain): each round's context has mask 0, as the warm
    start's layout writes it (``tool_turn_ids``), and the hook counts two rounds."""
    script = [(task.tool_call_text("7+5"), "12"), (task.tool_call_text("12-9+3"), "6"), ("Answer: 6", None)]
    out, server = run_tool_agent_loop(tokenizer, P, script)
    expected, mask = [], []
    for text, output in script:
        own = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        context = warmstart.tool_turn_ids(tokenizer, [output]) if output is not None else []
        expected, mask = expected + own + context, mask + [1] * len(own) + [0] * len(context)
    assert out.response_ids == expected and out.response_mask == mask
    assert out.num_turns == 6 and out.extra_fields["calc_calls"] == 2 and len(server.prompts) == 3
    assert mask_runs(torch.tensor(out.response_mask)) == 2


def test_eval_rollout_loop_follows_the_tool_agent_loop(tokenizer, monkeypatch):
    """warmstart.rollout with a scripted 'model' gives verl's response text and counts."""
    gold = {P.expression: task.turns(P, True)}

    def scripted(model, tok, sequences, max_new, do_sample, cfg):
        out = []
        for seq in sequences:
            text = tok.decode(seq)
            expr = text.split("Compute ")[1].split(".")[0]
            k = text.count("<|im_start|>tool")
            out.append(tok.encode(gold[expr][k][0], add_special_tokens=False) + [tok.eos_token_id])
        return out

    monkeypatch.setattr(warmstart, "_generate_turn", scripted)
    (result,) = warmstart.rollout(None, tokenizer, [P], do_sample=False, cfg=warmstart.ToolEvalConfig())
    out, _ = run_tool_agent_loop(tokenizer, P)
    assert result["response"] == tokenizer.decode(out.response_ids, skip_special_tokens=True)
    assert (result["tool_calls"], result["assistant_turns"]) == (1, 2)
    assert compute_score(task.DATA_SOURCE, result["response"], "6")["acc"] == 1.0


# ------------------------------------------------------------------------------------------- reward and metrics


def test_reward_reads_the_models_last_answer_from_the_whole_multi_turn_response(tokenizer):
    ids, _ = warmstart.encode_example(tokenizer, P, use_tool=True)
    n_prompt = len(warmstart.prompt_ids(tokenizer, P))
    response = tokenizer.decode(ids[n_prompt:], skip_special_tokens=True)  # as verl's reward loop decodes it
    assert "tool\n6\nassistant\n" in response
    result = compute_score(task.DATA_SOURCE, response, "6")
    assert (result["score"], result["acc"], result["tool_calls"], result["used_tool"]) == (1.0, 1.0, 1.0, 1.0)
    assert compute_score(task.DATA_SOURCE, response, "7")["score"] == -1.0
    direct = compute_score(task.DATA_SOURCE, "Answer: 6", "6")
    assert (direct["acc"], direct["used_tool"], direct["tool_calls"]) == (1.0, 0.0, 0.0)
    assert compute_score(task.DATA_SOURCE, '<tool_call>{"name": "calc"', "6")["reason"] == "no_answer"
    with pytest.raises(ValueError, match="resrl_tiny_tools/arith"):
        compute_score("resrl_tiny/arith", "Answer: 6", "6")


def test_parse_tool_calls_agrees_with_verls_hermes_parser(tokenizer):
    from verl.experimental.agent_loop.tool_parser import HermesToolParser

    texts = [task.tool_call_text("7+5"), "x<tool_call>{bad}</tool_call>" + task.tool_call_text("1-1"),
             "Answer: 3", '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>']
    parser = HermesToolParser(tokenizer)
    for text in texts:
        _, calls = asyncio.run(parser.extract_tool_calls(tokenizer.encode(text, add_special_tokens=False)))
        assert [(c.name, json.loads(c.arguments)) for c in calls] == task.parse_tool_calls(text)


def test_mask_runs_and_step_metrics():
    masks = [torch.tensor([1, 1, 0, 0, 1, 0, 1]), torch.tensor([1, 1, 1]), torch.tensor([1, 0, 0])]
    assert [mask_runs(m) for m in masks] == [2, 0, 0]  # a trailing run is not a round: nothing followed it
    metrics = tool_metrics(masks, [{"calc_calls": 2, "calc_errors": 1}, {}, None])
    assert metrics["tools/rounds/mean"] == pytest.approx(2 / 3)
    assert metrics["tools/used_frac"] == pytest.approx(1 / 3)
    assert metrics["tools/output_tokens/mean"] == pytest.approx(5 / 3)
    assert metrics["tools/calls/mean"] == pytest.approx(2 / 3) and metrics["tools/errors/mean"] == pytest.approx(1 / 3)
    assert "tools/calls/mean" not in tool_metrics(masks, [{}, {}, {}])
