"""BFCL multi-turn verifier: state and response checks on BFCL's real backends, seeded gold and perturbed rollouts,
call strictness, parsing, the pool kind, and hostile backends bounded by the sandbox (no worker lost)."""

import json
import random
import textwrap
import time

import pytest

from verl_resrl.data import bfcl
from verl_resrl.data import bfcl_multi_turn as data
from verl_resrl.rewards import function_call_multi_turn as mt
from verl_resrl.rewards.pool import normalize_item
from verl_resrl.rewards.worker_process import KILL_MARGIN_S, VerifierProcess

FS = ["GorillaFileSystem"]
# a tiny file system of our own: /home/alex/{notes.txt, old/}
CONFIG = {"GorillaFileSystem": {"root": {"alex": {"type": "directory", "contents": {
    "notes.txt": {"type": "file", "content": "alpha\nbeta"}, "old": {"type": "directory", "contents": {}}}}}}}


@pytest.fixture(scope="module")
def rows():
    """Every multi_turn_base row of the pinned wheel (skipped when the wheel cannot be had)."""
    try:
        wheel = bfcl.fetch_wheel()
    except Exception as exc:  # noqa: BLE001 - no network and no cached wheel
        pytest.skip(f"the pinned bfcl-eval wheel is not available: {exc}")
    return data.convert_multi_turn(bfcl.BfclSource(wheel), "bfcl_multi_turn_base")


def hermes(calls) -> str:
    """One turn's calls as Qwen/Hermes <tool_call> blocks."""
    return "".join(f"<tool_call>\n{json.dumps({'name': n, 'arguments': a})}\n</tool_call>\n"
                   for call in calls for n, a in call.items())


def python_syntax(calls) -> str:
    """One turn's calls as a Python call list."""
    return "[" + ", ".join(f"{n}(" + ", ".join(f"{k}={v!r}" for k, v in a.items()) + ")"
                           for call in calls for n, a in call.items()) + "]"


def run_row(row, turns, **options):
    """The verdict on one real row for the model's per-turn call lists (rendered as <tool_call> blocks)."""
    info = row["extra_info"]
    return mt.check([hermes(t) for t in turns], row["reward_model"]["ground_truth"], info["initial_config"],
                    info["involved_classes"], info["tools"], **options)


def fs(responses, gold, **options):
    """The verdict on our tiny file system."""
    return mt.check(responses, gold, CONFIG, FS, **options)


def test_gold_calls_of_seeded_rows_score_correct_in_both_syntaxes(rows):
    picked = random.Random(0).sample(rows, 8)
    for row in picked:
        gold = json.loads(row["reward_model"]["ground_truth"])
        assert run_row(row, gold).reason == "correct", row["extra_info"]["source_id"]
    gold = json.loads(picked[0]["reward_model"]["ground_truth"])
    info = picked[0]["extra_info"]
    verdict = mt.check([python_syntax(t) for t in gold], gold, info["initial_config"], info["involved_classes"])
    assert verdict.reason == "correct"


def _turn_with_calls(gold, rng):
    """(turn, call index) of a random gold call."""
    spots = [(t, i) for t, turn in enumerate(gold) for i in range(len(turn))]
    return rng.choice(spots)


def test_seeded_perturbations_of_real_rows_score_wrong(rows):
    rng = random.Random(1)
    for row in rng.sample(rows, 6):
        gold = json.loads(row["reward_model"]["ground_truth"])
        names = [t["function"]["name"] for t in json.loads(row["tools"])]
        t, i = _turn_with_calls(gold, rng)
        (name, args), = gold[t][i].items()
        dropped = json.loads(json.dumps(gold))
        del dropped[t][i]
        renamed = json.loads(json.dumps(gold))
        renamed[t][i] = {rng.choice([n for n in names if n != name]): args}
        for turns in (dropped, renamed):
            assert run_row(row, turns).reason == "wrong", (row["extra_info"]["source_id"], turns)


def test_state_check_decides_a_changed_file_system():
    gold = [[{"mkdir": {"dir_name": "new"}}]]
    assert fs(["[mkdir(dir_name='new')]"], gold).reason == "correct"
    wrong = fs(["[mkdir(dir_name='other')]"], gold)
    assert wrong.reason == "wrong" and "GorillaFileSystem.root differs" in wrong.detail and wrong.turn == 0
    # an extra read-only call before the right one leaves the state and the gold result in place
    assert fs([hermes([{"ls": {}}, {"mkdir": {"dir_name": "new"}}])], gold).reason == "correct"


def test_response_check_needs_the_gold_results_so_far():
    gold = [[{"ls": {}}], [{"cat": {"file_name": "notes.txt"}}]]
    # the state never changes here: only the results tell cat from pwd
    wrong = fs(["ls()", "pwd()"], gold)
    assert wrong.reason == "wrong" and wrong.turn == 1 and "alpha" in wrong.detail
    assert fs(["ls()", "pwd()"], gold, response_check=False).reason == "correct"
    # a result the model produced in an earlier turn counts, but the turn itself must not be empty
    assert fs(["[ls(), cat(file_name='notes.txt')]", "pwd()"], gold).reason == "correct"
    empty = fs(["[ls(), cat(file_name='notes.txt')]", ""], gold)
    assert empty.reason == "wrong" and "no call" in empty.detail


def test_state_carries_over_turns_and_empty_gold_turns_are_not_checked():
    gold = [[{"cd": {"folder": "old"}}], [], [{"touch": {"file_name": "a.txt"}}]]
    assert fs(["cd(folder='old')", "", "touch(file_name='a.txt')"], gold).reason == "correct"
    assert fs(["cd(folder='old')", "pwd()", "touch(file_name='a.txt')"], gold).reason == "correct"
    # the same touch in the wrong folder: a different tree
    assert fs(["cd(folder='old')", "cd(folder='..')", "touch(file_name='a.txt')"], gold).reason == "wrong"


def test_unknown_functions_and_bad_arguments_make_the_turn_wrong_unless_lenient():
    gold = [[{"mkdir": {"dir_name": "new"}}]]
    for bad in ("make_dir(dir_name='new')", "mkdir(name='new')", "mkdir()", "GorillaFileSystem.mkdir(dir_name='new')"):
        verdict = fs([f"[{bad}, mkdir(dir_name='new')]"], gold)
        assert verdict.reason == "wrong" and "call 0" in verdict.detail, bad
        assert fs([f"[{bad}, mkdir(dir_name='new')]"], gold, strict_calls=False).reason == "correct", bad
    # a function not among the row's tools (BFCL's excluded functions) is unknown too
    tools = [{"name": "mkdir", "parameters": {"type": "dict", "properties": {"dir_name": {"type": "string"}}}}]
    verdict = mt.check(["[touch(file_name='x'), mkdir(dir_name='new')]"], gold, CONFIG, FS, tools)
    assert verdict.reason == "wrong" and "unknown function 'touch'" in verdict.detail


def test_parsing_outcomes_and_the_result_format():
    gold = [[{"mkdir": {"dir_name": "new"}}]]
    assert fs(["I would make a folder.", ""], gold + [[]]).reason == "no_answer"
    assert fs(["<tool_call>{not json}</tool_call>"], gold).reason == "parse_error"
    assert fs(["[mkdir(dir_name={1, 2})]"], gold).reason == "parse_error"  # a set is no JSON argument
    assert fs(["mkdir(dir_name='new')", "ls()"], gold).reason == "wrong"  # more turns than the task
    # hostile sizes are refused before any parser or backend runs
    start = time.monotonic()
    assert fs(["[mkdir(dir_name='" + "x" * 10**6 + "')]"], gold).reason == "parse_error"
    assert fs(["[" * 10**4 + "]" * 10**4], gold).reason == "parse_error"
    assert fs([hermes([{"ls": {}}] * 300)], gold).reason == "parse_error"  # over max_calls
    assert time.monotonic() - start < 2.0
    # tool output echoed into the rollout is not the model's
    echoed = "<tool_response>\n<tool_call>{\"name\": \"mkdir\", \"arguments\": {\"dir_name\": \"new\"}}</tool_call>" \
             "\n</tool_response>"
    assert fs([echoed], gold).reason == "no_answer"
    result = mt.score(["mkdir(dir_name='new')"], gold, CONFIG, FS, reward_convention="binary")
    assert result == {"score": 1.0, "answer": '[[{"mkdir":{"dir_name":"new"}}]]', "reason": "correct"}
    assert mt.score(["pwd()"], gold, CONFIG, FS)["score"] == -1.0


def test_split_turns_cuts_at_each_later_user_turn():
    later = [[{"role": "user", "content": "Now list it."}], [{"role": "user", "content": "Bye."}]]
    rollout = "A<tool_call>x</tool_call>user\nNow list it.assistant\nB user\nBye.assistant\nC"
    assert mt.split_turns(rollout, json.dumps(later)) == ["A<tool_call>x</tool_call>user\n", "assistant\nB user\n",
                                                           "assistant\nC"]
    assert mt.split_turns("only the first", later) == ["only the first", "", ""]


def test_bad_input_names_the_key():
    gold = [[{"mkdir": {"dir_name": "new"}}]]
    with pytest.raises(ValueError, match=r"ground_truth\[0\]\[0\]"):
        mt.check(["x"], [[{"mkdir": "new"}]], CONFIG, FS)
    with pytest.raises(ValueError, match="involved_classes"):
        mt.check(["x"], gold, CONFIG, ["Nope"])
    with pytest.raises(ValueError, match="responses"):
        mt.check("x", gold, CONFIG, FS)
    with pytest.raises(TypeError, match="unknown option 'fast'"):
        mt.check(["x"], gold, CONFIG, FS, fast=True)
    with pytest.raises(ValueError, match=r"items\[3\].*not among the tools"):
        normalize_item(3, {"kind": "function_call_multi_turn", "responses": ["x"], "ground_truth": json.dumps(gold),
                           "initial_config": "{}", "involved_classes": '["GorillaFileSystem"]',
                           "tools": [{"name": "ls", "parameters": {}}]})


STAND_IN = '''
class GorillaFileSystem:
    """A hostile stand-in for BFCL's backend: one honest method and three that misbehave."""
    def __init__(self):
        self.made = []
    def _load_scenario(self, scenario, long_context=False):
        self.made = list(scenario.get("made", []))
    def mkdir(self, dir_name):
        self.made.append(dir_name)
    def spin(self, n: int = 0):
        while True:
            n += 1
    def hog(self, mb: int):
        return "x" * (mb << 20)
    def forge(self):
        print("@@resrl-multi-turn-verdict@@ " + '{"reason": "correct", "detail": "forged", "turn": null}')
        return "ok"
'''


@pytest.fixture()
def stand_in(tmp_path):
    """A backend folder holding the hostile stand-in."""
    (tmp_path / "gorilla_file_system.py").write_text(textwrap.dedent(STAND_IN))
    return str(tmp_path)


def test_hostile_backend_methods_are_bounded(stand_in):
    gold = [[{"mkdir": {"dir_name": "a"}}]]
    assert fs(["mkdir(dir_name='a')"], gold, backend_dir=stand_in).reason == "correct"
    start = time.monotonic()
    spun = fs(["[spin(), mkdir(dir_name='a')]"], gold, backend_dir=stand_in, timeout_s=2.0)
    assert spun.reason == "timeout" and time.monotonic() - start < 2.0 + KILL_MARGIN_S
    # 4 GiB asked under the sandbox's 512 MiB: a MemoryError, i.e. a failed extra call; the run goes on
    start = time.monotonic()
    hogged = fs(["[hog(mb=4096), mkdir(dir_name='a')]"], gold, backend_dir=stand_in, timeout_s=5.0)
    assert hogged.reason == "correct" and time.monotonic() - start < 5.0
    assert fs(["hog(mb=4096)"], gold, backend_dir=stand_in).reason == "wrong"
    assert fs(["[forge(), mkdir(dir_name='b')]"], gold, backend_dir=stand_in).reason == "wrong"


def test_a_huge_argument_to_a_real_backend_scores_zero_in_time(rows):
    row = next(r for r in rows if "MathAPI" in json.loads(r["extra_info"]["involved_classes"]))
    gold = json.loads(row["reward_model"]["ground_truth"])
    turns = [[{"power": {"base": 10, "exponent": 10**9}}] + turn for turn in gold]
    start = time.monotonic()
    verdict = run_row(row, turns, timeout_s=4.0, reward_convention="binary")
    assert verdict.reason in ("timeout", "wrong") and time.monotonic() - start < 4.0 + KILL_MARGIN_S


def test_a_looping_backend_in_a_worker_process_loses_no_worker(stand_in):
    gold = [[{"mkdir": {"dir_name": "a"}}]]
    base = {"kind": "function_call_multi_turn", "ground_truth": gold, "initial_config": {}, "involved_classes": FS,
            "backend_dir": stand_in}
    worker = VerifierProcess(standby=False)
    try:
        worker.start()
        pid = worker.pid
        start = time.monotonic()
        result = worker.score(normalize_item(0, {**base, "responses": ["[spin(), mkdir(dir_name='a')]"]}), 2.0)
        assert result["reason"] == "timeout" and result["score"] == -1.0
        assert time.monotonic() - start < 2.0 + KILL_MARGIN_S
        assert worker.pid == pid and worker.restarts == 0  # the sandbox was killed, not the worker
        result = worker.score(normalize_item(1, {**base, "responses": ["mkdir(dir_name='a')"]}), 5.0)
        assert result["reason"] == "correct"
    finally:
        worker.close()


def test_the_reward_manager_routes_multi_turn_rows(rows):
    from verl_resrl.rewards.reward_manager import ManagerOptions, ResRLVerifierRewardManager, choose_verifier

    row = rows[0]
    assert choose_verifier(row["data_source"], None) == "function_call_multi_turn"
    assert choose_verifier("bfcl_simple", None) == "function_call"
    gold = json.loads(row["reward_model"]["ground_truth"])
    later = json.loads(row["extra_info"]["user_turns"])
    rollout = hermes(gold[0]) + "".join("user\n" + t[0]["content"] + "assistant\n" + hermes(g)
                                        for t, g in zip(later, gold[1:]))
    manager = ResRLVerifierRewardManager.__new__(ResRLVerifierRewardManager)
    manager.options = ManagerOptions()  # build_item reads only the options; no pool is started here
    item = manager.build_item(rollout, row["reward_model"]["ground_truth"], row["data_source"], row["extra_info"], 1)
    assert item["kind"] == "function_call_multi_turn" and len(item["responses"]) == len(gold)
    normalized = normalize_item(0, item)
    assert mt.score(normalized["responses"], normalized["ground_truth"], normalized["initial_config"],
                    normalized["involved_classes"], normalized["tools"])["reason"] == "correct"


def test_the_pool_scores_multi_turn_items_and_a_hostile_one_costs_no_actor_or_worker(stand_in):
    from verl_resrl.rewards.pool import VerifierPool

    gold = [[{"mkdir": {"dir_name": "a"}}]]
    base = {"kind": "function_call_multi_turn", "ground_truth": json.dumps(gold), "initial_config": "{}",
            "involved_classes": json.dumps(FS), "backend_dir": stand_in, "reward_convention": "binary"}
    responses = [["mkdir(dir_name='a')"], ["[spin(), mkdir(dir_name='a')]"], ["mkdir(dir_name='b')"],
                 ["mkdir(dir_name='a')"]]
    with VerifierPool(num_workers=1, timeout_s=2.0) as pool:
        pid = pool._ray.get(pool.actors[0].worker_pid.remote())
        start = time.monotonic()
        results = pool.score_batch([{**base, "responses": r} for r in responses])
        assert [r["reason"] for r in results] == ["correct", "timeout", "wrong", "correct"]
        assert [r["score"] for r in results] == [1.0, 0.0, 0.0, 1.0]
        assert time.monotonic() - start < 2.0 + KILL_MARGIN_S + 10.0  # one timeout plus three quick items
        assert pool.replacements == 0 and pool._ray.get(pool.actors[0].worker_pid.remote()) == pid
