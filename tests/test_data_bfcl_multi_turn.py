"""BFCL multi-turn base data: rows from the pinned wheel against the wheel's own files read here independently, the
split, gold calls bound like BFCL's backends bind them, the CLI, and errors on malformed entries."""

import ast
import importlib
import inspect
import json
import sys
import zipfile

import pandas as pd
import pytest

from verl_resrl.data import bfcl
from verl_resrl.data import bfcl_multi_turn as data
from verl_resrl.data.__main__ import main as data_main
from verl_resrl.rewards.function_call_multi_turn import BACKEND_FILES, BACKEND_PACKAGE

QUESTIONS = "bfcl_eval/data/BFCL_v4_multi_turn_base.json"
ANSWERS = "bfcl_eval/data/possible_answer/BFCL_v4_multi_turn_base.json"


@pytest.fixture(scope="module")
def wheel():
    """The pinned wheel (skipped when it cannot be had)."""
    try:
        return bfcl.fetch_wheel()
    except Exception as exc:  # noqa: BLE001 - no network and no cached wheel
        pytest.skip(f"the pinned bfcl-eval wheel is not available: {exc}")


@pytest.fixture(scope="module")
def raw(wheel):
    """The wheel's question entries, answers and docs per class, read with zipfile and json only."""
    with zipfile.ZipFile(wheel) as z:
        lines = lambda name: [json.loads(x) for x in z.read(name).decode().splitlines() if x.strip()]  # noqa: E731
        docs = {c: lines(f"bfcl_eval/data/multi_turn_func_doc/{stem}.json") for c, stem in BACKEND_FILES.items()}
        return lines(QUESTIONS), {a["id"]: a["ground_truth"] for a in lines(ANSWERS)}, docs


@pytest.fixture(scope="module")
def rows(wheel):
    """The converted rows."""
    return data.convert_multi_turn(bfcl.BfclSource(wheel), "bfcl_multi_turn_base")


def test_one_row_per_entry_and_a_disjoint_split_by_the_id_hash(rows, raw):
    questions = raw[0]
    assert len(rows) == len(questions) == 200
    ids = [r["extra_info"]["source_id"] for r in rows]
    assert ids == [q["id"] for q in questions] and len(set(ids)) == len(ids)
    train = {r["extra_info"]["source_id"] for r in rows if r["extra_info"]["split"] == "train"}
    test = {r["extra_info"]["source_id"] for r in rows if r["extra_info"]["split"] == "test"}
    assert not train & test and train | test == set(ids)
    assert all(r["extra_info"]["split"] == bfcl.split_of(r["extra_info"]["source_id"]) for r in rows)
    assert (len(train), len(test)) == (161, 39)


def test_rows_carry_the_turns_classes_config_and_offered_tools(rows, raw):
    questions, _, docs = raw
    for row, entry in zip(rows, questions):
        info = row["extra_info"]
        assert row["data_source"] == "bfcl_multi_turn_base" and info["verifier"] == "function_call_multi_turn"
        assert row["prompt"] == entry["question"][0] and json.loads(info["user_turns"]) == entry["question"][1:]
        assert info["num_turns"] == len(entry["question"])
        assert json.loads(info["involved_classes"]) == entry["involved_classes"]
        assert json.loads(info["initial_config"]) == entry["initial_config"]
        excluded = set(entry.get("excluded_function", []))
        offered = [d["name"] for c in entry["involved_classes"] for d in docs[c] if d["name"] not in excluded]
        tools = json.loads(row["tools"])
        assert [t["function"]["name"] for t in tools] == offered == [d["name"] for d in json.loads(info["tools"])]
        assert all(t["type"] == "function" and t["function"]["parameters"]["type"] == "object" for t in tools)


@pytest.fixture(scope="module")
def backends(wheel, tmp_path_factory):
    """BFCL's backend classes imported in this process from a copy of the wheel's package tree."""
    root = tmp_path_factory.mktemp("bfcl_pkg")
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith(BACKEND_PACKAGE.replace(".", "/")) or name.endswith("__init__.py"):
                z.extract(name, root)
    sys.path.insert(0, str(root))
    try:
        yield {c: getattr(importlib.import_module(f"{BACKEND_PACKAGE}.{s}"), c) for c, s in BACKEND_FILES.items()}
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m.startswith("bfcl_eval")]:
            del sys.modules[name]


def test_gold_calls_name_their_arguments_as_the_backends_bind_them(rows, raw, backends):
    questions, answers, _ = raw
    positional = 0
    for row, entry in zip(rows, questions):
        methods = {}
        for c in entry["involved_classes"]:
            methods.update({n: m for n, m in inspect.getmembers(backends[c], inspect.isfunction)})
        gold = json.loads(row["reward_model"]["ground_truth"])
        for turn, texts in zip(gold, answers[entry["id"]]):
            assert len(turn) == len(texts)
            for call, text in zip(turn, texts):
                node = ast.parse(text, mode="eval").body
                args = [ast.literal_eval(a) for a in node.args]
                kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
                positional += bool(args)
                bound = inspect.signature(methods[node.func.id]).bind(None, *args, **kwargs).arguments
                bound.pop(next(iter(bound)))  # self
                assert call == {node.func.id: json.loads(json.dumps(dict(bound)))}, text
    assert positional == 40  # the calls BFCL writes with a positional argument


def _fixture_wheel(wheel, tmp_path, edit=None, keep=10) -> str:
    """A copy of the wheel's multi-turn data with the first ``keep`` entries; ``edit(questions, answers)`` may
    rewrite both line lists first."""
    with zipfile.ZipFile(wheel) as z:
        questions = z.read(QUESTIONS).decode().splitlines()[:keep]
        answers = z.read(ANSWERS).decode().splitlines()[:keep]
        docs = {n: z.read(n) for n in z.namelist() if "/multi_turn_func_doc/" in n}
    if edit:
        edit(questions, answers)
    path = tmp_path / "bfcl_eval-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as out:
        out.writestr(QUESTIONS, "\n".join(questions) + "\n")
        out.writestr(ANSWERS, "\n".join(answers) + "\n")
        for name, text in docs.items():
            out.writestr(name, text)
    return str(path)


def test_cli_writes_both_splits_and_prints_stats(wheel, tmp_path, capsys):
    path = _fixture_wheel(wheel, tmp_path)
    assert data_main(["--out-dir", str(tmp_path / "out"), "--only", "bfcl_multi_turn_base", "--bfcl-wheel", path]) == 0
    stats = json.loads(capsys.readouterr().out.splitlines()[0])
    assert stats["rows"] == 10 and stats["train"] + stats["test"] == 10
    train = pd.read_parquet(tmp_path / "out" / "bfcl_multi_turn_base_train.parquet")
    assert len(train) == stats["train"] and set(train["extra_info"].map(lambda e: e["split"])) == {"train"}
    assert stats["turns_per_row"]["max"] >= stats["turns_per_row"]["min"] >= 1


def _edit_entry(index, change):
    """An edit that rewrites entry ``index`` of the question file with ``change(entry)``."""
    def edit(questions, answers):
        entry = json.loads(questions[index])
        change(entry)
        questions[index] = json.dumps(entry)
    return edit


def _edit_answer(index, change):
    """An edit that rewrites answer ``index`` with ``change(answer)``."""
    def edit(questions, answers):
        answer = json.loads(answers[index])
        change(answer)
        answers[index] = json.dumps(answer)
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda q, a: q.__setitem__(2, "{oops"), r"BFCL_v4_multi_turn_base.json:3: not valid JSON"),
    (_edit_entry(1, lambda e: e.pop("initial_config")), r"missing key\(s\) \['initial_config'\]"),
    (_edit_entry(1, lambda e: e.__setitem__("involved_classes", ["Nope"])), r"multi_turn_base_1.*unknown class 'Nope'"),
    (_edit_entry(1, lambda e: e.__setitem__("question", [[]])), r"multi_turn_base_1.*question\[0\]"),
    (_edit_entry(1, lambda e: e.__setitem__("id", "multi_turn_base_0")), r"multi_turn_base_0.*appears twice"),
    (_edit_answer(1, lambda a: a["ground_truth"].pop()), r"multi_turn_base_1.*one call list per question turn"),
    (_edit_answer(1, lambda a: a.__setitem__("id", "other")), r"no ground truth for id 'multi_turn_base_1'"),
    (_edit_answer(0, lambda a: a["ground_truth"][0].append("cp(source='a', destination='b')")),
     r"ground_truth\[0\]\[3\].*'cp', which is not among the offered functions"),  # entry 0 excludes cp
    (_edit_answer(0, lambda a: a["ground_truth"][0].append("cd(folder=somewhere)")),
     r"cd\.folder: argument is not a literal"),
    (_edit_answer(0, lambda a: a["ground_truth"][0].append("cd(path='x')")), r"'path', which is not a parameter of cd"),
])
def test_malformed_entries_raise_naming_the_file_entry_and_key(wheel, tmp_path, edit, message):
    source = bfcl.BfclSource(_fixture_wheel(wheel, tmp_path, edit))
    with pytest.raises((ValueError, KeyError), match=message):
        data.convert_multi_turn(source, "bfcl_multi_turn_base")


def test_unknown_dataset_and_bad_fraction_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown BFCL multi-turn dataset"):
        data.prepare_multi_turn(["bfcl_multi_turn_nope"], str(tmp_path), wheel=str(tmp_path))
    with pytest.raises(ValueError, match="eval_fraction"):
        data.prepare_multi_turn(["bfcl_multi_turn_base"], str(tmp_path), eval_fraction=2.0)
