"""The BFCL multi-turn agent loop (``resrl_bfcl_multi_turn``) without Ray: a scripted server plays the model on real
``multi_turn_base`` rows; the tool outputs, the token layout and mask, the verifier's verdict, errors and budgets.

Expected values are independent of the code under test: tool outputs come from BFCL's backend classes imported in
this process and called directly (results rendered as BFCL renders them: a string as it is, a dict as JSON, else
``str``); the token layout is written out by hand from the test's chat template; verdicts come from the existing
verifier (``function_call_multi_turn``, through ``split_turns`` as the reward manager calls it).
"""

import asyncio
import copy
import importlib
import json
import sys
import textwrap
import time
import zipfile

import pytest
from omegaconf import OmegaConf

from verl_resrl.data import bfcl
from verl_resrl.data import bfcl_multi_turn as data
from verl_resrl.rewards import function_call_multi_turn as mt
from bfcl_backends import fresh_instances

IM_END, GEN = "<|im_end|>", "<|im_start|>assistant\n"
# Qwen's layout, shortened, for the byte-level tiny tokenizer: tools first in a system turn; a tool message is a user
# turn holding <tool_response> (as Qwen's template writes it, so the verifier drops echoed tool output); each message
# renders on its own, so a prefix of the conversation renders to a token prefix (verl's continuous-token diffs).
TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}{%- endif %}"
    "{%- for call in message.get('tool_calls') or [] %}"
    "{{- '<tool_call>\\n' + ({'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson)"
    " + '\\n</tool_call>' }}{%- endfor %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def tool_turn(result: str) -> str:
    """One tool message as the template renders it."""
    return f"<|im_start|>user\n<tool_response>\n{result}\n</tool_response><|im_end|>\n"


def user_turn(text: str) -> str:
    """One user message as the template renders it."""
    return f"<|im_start|>user\n{text}<|im_end|>\n"


def hermes(calls) -> str:
    """Calls as Qwen/Hermes <tool_call> blocks."""
    return "".join(f"<tool_call>\n{json.dumps({'name': n, 'arguments': a})}\n</tool_call>\n"
                   for call in calls for n, a in call.items())


@pytest.fixture(scope="module")
def tokenizer():
    from verl_resrl.tiny.tokenizer import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = TEMPLATE
    assert tok.convert_ids_to_tokens(tok.eos_token_id) == IM_END
    return tok


@pytest.fixture(scope="module")
def wheel():
    """The pinned wheel with its backends extracted (skipped when it cannot be had)."""
    try:
        path = bfcl.fetch_wheel()
        data.extract_backends(path)
    except Exception as exc:  # noqa: BLE001 - no network and no cached wheel
        pytest.skip(f"the pinned bfcl-eval wheel (BFCL's backends) is not available: {exc}")
    return path


@pytest.fixture(scope="module")
def rows(wheel):
    """Every multi_turn_base row by BFCL id."""
    return {r["extra_info"]["source_id"]: r for r in data.convert_multi_turn(bfcl.BfclSource(wheel),
                                                                             "bfcl_multi_turn_base")}


@pytest.fixture(scope="module")
def backends(wheel, tmp_path_factory):
    """BFCL's backend classes imported in this process from a copy of the wheel's package tree."""
    root = tmp_path_factory.mktemp("bfcl_pkg")
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith(mt.BACKEND_PACKAGE.replace(".", "/")) or name.endswith("__init__.py"):
                z.extract(name, root)
    sys.path.insert(0, str(root))
    try:
        yield {c: getattr(importlib.import_module(f"{mt.BACKEND_PACKAGE}.{s}"), c) for c, s in mt.BACKEND_FILES.items()}
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m.startswith("bfcl_eval")]:
            del sys.modules[name]


def direct_results(backends, row, calls) -> list[str]:
    """The calls run in order, directly, on fresh instances of the row's classes; results as BFCL renders them."""
    instances = fresh_instances(backends, row)
    out = []
    for call in calls:
        ((name, args),) = call.items()
        result = getattr(next(i for i in instances if hasattr(i, name)), name)(**args)
        text = json.dumps(result) if isinstance(result, dict) else str(result)
        out.append(result if isinstance(result, str) else text)
    return out


class ScriptedServer:
    """verl's LLM server client contract (``generate`` -> TokenOutput): each call answers the script's next text."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script, self.prompts = tokenizer, list(script), []

    async def generate(self, request_id=None, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.prompts.append(list(prompt_ids))
        assert len(self.prompts) <= len(self.script), "the loop asked for more assistant turns than scripted"
        text = self.script[len(self.prompts) - 1]
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return TokenOutput(token_ids=ids, log_probs=[-0.5] * len(ids))


def loop_config(response_length=32768, options=None, **multi_turn):
    """The keys verl's ToolAgentLoop reads (verl's defaults but a long tool output), plus our options block."""
    turns = {"max_user_turns": None, "max_assistant_turns": None, "max_parallel_calls": 1,
             "max_tool_response_length": 100_000, "tool_response_truncate_side": "middle", "format": "hermes"}
    cfg = {"actor_rollout_ref": {"rollout": {"prompt_length": 32768, "response_length": response_length,
                                             "full_determinism": False, "multi_turn": {**turns, **multi_turn}}},
           "data": {"apply_chat_template_kwargs": {}}}
    if options:
        cfg["resrl_bfcl_agent"] = options
    return OmegaConf.create(cfg)


def run_loop(tokenizer, row, script, cfg=None):
    """One rollout of ``row`` through the registered loop with a scripted server: (output, server, loop)."""
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry

    from verl_resrl.data import bfcl_agent_loop

    target = _agent_loop_registry[bfcl_agent_loop.AGENT_LOOP]["_target_"]
    assert target == "verl_resrl.data.bfcl_agent_loop.BfclMultiTurnAgentLoop"
    cfg = cfg if cfg is not None else loop_config()
    server = ScriptedServer(tokenizer, script)
    kwargs = {"raw_prompt": row["prompt"], "tools": row["tools"], "extra_info": row["extra_info"],
              "index": (row["extra_info"] or {}).get("index"), "data_source": row["data_source"]}

    async def go():  # built inside the event loop, as verl's worker builds it (the loop keeps its event loop)
        loop = bfcl_agent_loop.BfclMultiTurnAgentLoop(
            trainer_config=DictConfigWrap(cfg), server_manager=server, tokenizer=tokenizer, processor=None,
            dataset_cls=None, data_config=DictConfigWrap(cfg.data), hf_model_type="qwen2", tools=ToolListWrap([]))
        return await loop.run({"temperature": 1.0, "logprobs": True}, **kwargs), loop

    out, loop = asyncio.run(go())
    return out, server, loop


def verdict(tokenizer, row, out):
    """The verifier's verdict on the decoded response, cut into turns as the reward manager cuts it."""
    info = row["extra_info"]
    text = tokenizer.decode(out.response_ids, skip_special_tokens=True)
    return mt.check(mt.split_turns(text, info["user_turns"]), row["reward_model"]["ground_truth"],
                    info["initial_config"], info["involved_classes"], info["tools"])


def runs(out, tokenizer) -> list[tuple[int, str]]:
    """The response as (mask, decoded text) runs of equal mask."""
    pieces = []
    for token, m in zip(out.response_ids, out.response_mask):
        if pieces and pieces[-1][0] == m:
            pieces[-1][1].append(token)
        else:
            pieces.append((m, [token]))
    return [(m, tokenizer.decode(ids)) for m, ids in pieces]


ROW = "multi_turn_base_0"  # GorillaFileSystem + TwitterAPI, 4 turns, gold calls 3 / 2 / 1 / 4


def gold_script(row, first_split=1):
    """The gold calls of each turn, then 'Done.'; turn 0's calls in two messages (its first ``first_split``)."""
    gold = json.loads(row["reward_model"]["ground_truth"])
    script, messages = [], []
    for t, calls in enumerate(gold):
        groups = [calls[:first_split], calls[first_split:]] if t == 0 else [calls]
        messages.append([g for g in groups if g])
        script += [hermes(g) for g in groups if g] + ["Done."]
    return gold, messages, script


def test_gold_calls_run_on_the_backends_and_score_correct(tokenizer, rows, backends):
    row = rows[ROW]
    gold, messages, script = gold_script(row)
    out, server, loop = run_loop(tokenizer, row, script)
    later = [t[0]["content"] for t in json.loads(row["extra_info"]["user_turns"])]
    # the layout by hand: each model message + <|im_end|> (mask 1); the Qwen builder's "\n", the tool or user
    # turn and the generation prompt (mask 0); the real outputs of the gold calls, computed directly
    outputs = iter(direct_results(backends, row, [c for turn in gold for c in turn]))
    expected = []
    for t, groups in enumerate(messages):
        for group in groups:
            context = "\n" + "".join(tool_turn(next(outputs)) for _ in group) + GEN
            expected += [(1, hermes(group) + IM_END), (0, context)]
        expected.append((1, "Done." + IM_END))
        if t < len(later):
            expected.append((0, "\n" + user_turn(later[t]) + GEN))
    assert runs(out, tokenizer) == expected
    assert tokenizer.decode(out.response_ids) == "".join(text for _, text in expected)
    # verl's count of turns: 9 assistant, 5 tool rounds + 3 user turns, + 1
    assert len(server.prompts) == len(script) == 9 and out.num_turns == 9 + 8 + 1
    # log-probs: the server's on the model's tokens, 0.0 on the context
    assert out.response_logprobs == [-0.5 if m else 0.0 for m in out.response_mask]
    # the first prompt is the row's question rendered with the row's own tools
    rendered = tokenizer.apply_chat_template(row["prompt"], tools=json.loads(row["tools"]), tokenize=False,
                                             add_generation_prompt=True)
    assert out.prompt_ids == server.prompts[0] == tokenizer.encode(rendered, add_special_tokens=False)
    assert all(f'"name": "{t["function"]["name"]}"' in rendered for t in json.loads(row["tools"]))
    assert loop.history == [c for turn in gold for c in turn]
    v = verdict(tokenizer, row, out)
    assert (v.reason, v.calls) == ("correct", gold)


def test_a_wrong_value_in_one_call_scores_wrong(tokenizer, rows):
    row = rows[ROW]
    gold, _, script = gold_script(row)
    changed = copy.deepcopy(gold)
    assert changed[1][1] == {"grep": {"file_name": "final_report.pdf", "pattern": "budget analysis"}}
    changed[1][1]["grep"]["pattern"] = "budget forecast"
    script = [hermes(changed[0][:1]), hermes(changed[0][1:]), "Done.", hermes(changed[1])] + script[4:]
    out, server, _ = run_loop(tokenizer, row, script)
    assert len(server.prompts) == len(script)  # the episode went on to the end
    v = verdict(tokenizer, row, out)
    assert (v.reason, v.turn) == ("wrong", 1)


def test_an_unknown_function_and_unbound_arguments_are_error_messages_and_the_loop_goes_on(tokenizer, rows, backends):
    row = rows[ROW]
    gold = json.loads(row["reward_model"]["ground_truth"])
    bad = [{"teleport": {"to": "mars"}}, {"mkdir": {"name": "temp"}}]  # not offered; mkdir takes dir_name
    script = [hermes(bad), hermes(gold[0]), "Done."]
    cfg = loop_config(max_assistant_turns=3)
    out, server, loop = run_loop(tokenizer, row, script, cfg)
    tool_texts = [m["content"] for m in loop_messages(out, tokenizer)]
    assert tool_texts[0].startswith("Error during execution: ") and "teleport" in tool_texts[0]
    assert "unknown function" in tool_texts[0]
    assert tool_texts[1].startswith("Error during execution: ") and "mkdir" in tool_texts[1]
    # the failed calls changed nothing: the gold calls after them give the backends' own outputs
    assert tool_texts[2:] == direct_results(backends, row, gold[0])
    assert len(server.prompts) == 3


def loop_messages(out, tokenizer) -> list[dict]:
    """The tool messages' contents, read back from the response text."""
    text = tokenizer.decode(out.response_ids)
    return [{"content": part.split("\n</tool_response>")[0]} for part in text.split("<tool_response>\n")[1:]]


def test_turn_and_length_budgets_stop_the_loop(tokenizer, rows):
    row = rows[ROW]
    gold, _, script = gold_script(row)
    out, server, _ = run_loop(tokenizer, row, script, loop_config(max_assistant_turns=3))
    assert len(server.prompts) == 3 and runs(out, tokenizer)[-1] == (1, "Done." + IM_END)  # turn 0, no user turn
    assert verdict(tokenizer, row, out).reason == "wrong"  # later turns never reached
    # verl counts tool rounds and user turns together; after one tool round the next generation is the last
    out, server, _ = run_loop(tokenizer, row, script, loop_config(max_user_turns=1))
    assert len(server.prompts) == 2 and out.num_turns == 4
    # a response budget: the loop stops where the next context would not fit, nothing is cut but the last message
    out, server, _ = run_loop(tokenizer, row, script, loop_config(response_length=600))
    assert len(out.response_ids) == len(out.response_mask) <= 600 and len(server.prompts) < len(script)
    # the gold transcript runs out of turns on its own: one more scripted message is never asked for
    out, server, _ = run_loop(tokenizer, row, script + ["never"])
    assert len(server.prompts) == len(script)


STAND_IN = '''
class GorillaFileSystem:
    """A stand-in backend whose spin() never returns."""
    def __init__(self):
        self.made = []
    def _load_scenario(self, scenario, long_context=False):
        self.made = list(scenario.get("made", []))
    def mkdir(self, dir_name):
        self.made.append(dir_name)
        return "made " + dir_name
    def spin(self, n: int = 0):
        while True:
            n += 1
    def big(self):
        return "head" + "m" * 5000 + "tail"
'''


def stand_in_row():
    """A row of our own on the stand-in backend."""
    tools = [{"type": "function", "function": {"name": n, "description": n, "parameters": {
        "type": "object", "properties": p, "required": list(p)}}} for n, p in
        [("mkdir", {"dir_name": {"type": "string"}}), ("spin", {}), ("big", {})]]
    return {"data_source": "bfcl_multi_turn_base", "prompt": [{"role": "user", "content": "Make a."}],
            "tools": json.dumps(tools), "reward_model": {"ground_truth": json.dumps([[{"mkdir": {"dir_name": "a"}}]])},
            "extra_info": {"index": 7, "source_id": "ours_7", "user_turns": "[]", "initial_config": "{}",
                           "involved_classes": '["GorillaFileSystem"]'}}


def test_a_backend_that_times_out_is_a_tool_message_and_ends_the_episode(tokenizer, tmp_path):
    (tmp_path / "gorilla_file_system.py").write_text(textwrap.dedent(STAND_IN))
    cfg = loop_config(options={"backend_dir": str(tmp_path), "timeout_s": 1.0}, max_tool_response_length=50)
    row = stand_in_row()
    out, server, _ = run_loop(tokenizer, row, [hermes([{"mkdir": {"dir_name": "a"}}, {"big": {}}]), "Done."], cfg)
    # a long output is cut as verl cuts tool output (middle: 25 + marker + 25 characters of the whole text)
    cut = "head" + "m" * 21 + "...(truncated)..." + "m" * 21 + "tail"
    assert loop_messages(out, tokenizer) == [{"content": "made a"}, {"content": cut}] and len(server.prompts) == 2
    start = time.monotonic()
    out, server, _ = run_loop(tokenizer, row, [hermes([{"spin": {}}]), "never"], cfg)
    assert time.monotonic() - start < 1.0 + 3.0
    (message,) = loop_messages(out, tokenizer)
    assert message["content"].startswith("Error during execution: ") and "1.0s" in message["content"]
    assert len(server.prompts) == 1 and out.response_mask[-1] == 0


def test_bad_rows_are_refused_naming_the_row_and_the_key(tokenizer, rows):
    row = rows[ROW]
    where = "row 'multi_turn_base_0' (index 0)"
    cases = [
        ({"user_turns": None}, r"extra_info\.user_turns is missing"),
        ({"user_turns": "[[{"}, r"extra_info\.user_turns is a string but not JSON"),
        ({"user_turns": '[[{"role": "assistant", "content": "x"}]]'}, r"extra_info\.user_turns\[0\] must be"),
        ({"initial_config": "{nope"}, r"extra_info\.initial_config is a string but not JSON"),
        ({"involved_classes": '["WeatherAPI"]'}, r"extra_info\.involved_classes must be"),
    ]
    for change, message in cases:
        bad = {**row, "extra_info": {**row["extra_info"], **change}}
        with pytest.raises(ValueError, match=rf"{ROW}.*{message}") as err:
            run_loop(tokenizer, bad, ["never"])
        assert str(err.value).startswith(where)
    with pytest.raises(ValueError, match=r"multi_turn_base_0.*: tools: not valid JSON"):
        run_loop(tokenizer, {**row, "tools": "[{"}, ["never"])
    with pytest.raises(ValueError, match=r"extra_info is missing"):
        run_loop(tokenizer, {**row, "extra_info": None}, ["never"])


def test_the_dataset_class_resolves_and_registers_the_loop():
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    from verl.utils.dataset.rl_dataset import get_dataset_class

    from verl_resrl.data import bfcl_agent_loop as bal
    from verl_resrl.data.tools_dataset import ToolsRLHFDataset

    cls = get_dataset_class(OmegaConf.create({"custom_cls": {"path": bal.DATASET_PATH, "name": bal.DATASET_NAME}}))
    assert issubclass(cls, ToolsRLHFDataset) and bal.AGENT_LOOP in _agent_loop_registry


def test_the_call_budget_ends_the_episode(tokenizer, tmp_path):
    """More calls than max_calls (the verifier refuses those rollouts as parse_error): an error message, the end."""
    (tmp_path / "gorilla_file_system.py").write_text(textwrap.dedent(STAND_IN))
    cfg = loop_config(options={"backend_dir": str(tmp_path), "max_calls": 2})
    mkdir = hermes([{"mkdir": {"dir_name": "a"}}])
    out, server, loop = run_loop(tokenizer, stand_in_row(), [mkdir, mkdir, mkdir, "never"], cfg)
    contents = [m["content"] for m in loop_messages(out, tokenizer)]
    assert contents[:2] == ["made a", "made a"] and len(contents) == 3 and "more than 2 calls" in contents[2]
    assert len(server.prompts) == 3 and len(loop.history) == 2
