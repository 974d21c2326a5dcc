"""BFCL data: a tiny wheel built from the hand-written fixtures gives the expected verl rows; split; errors."""

import json
import os
import zipfile

import pandas as pd
import pytest

from verl_resrl.data import bfcl
from verl_resrl.data.__main__ import main as data_main

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "bfcl")
NAMES = ["bfcl_simple", "bfcl_multiple", "bfcl_parallel", "bfcl_parallel_multiple"]


def build_wheel(tmp_path, replace=None) -> str:
    """A zip laid out like the bfcl-eval wheel holding the fixture files (``replace``: name -> new text)."""
    path = tmp_path / "bfcl_eval-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for root, _, files in os.walk(FIXTURES):
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), FIXTURES)
                with open(os.path.join(root, name)) as f:
                    text = f.read()
                z.writestr(f"bfcl_eval/data/{rel}", (replace or {}).get(rel, text))
        z.writestr("bfcl_eval/__init__.py", "")
    return str(path)


def test_rows_follow_verls_schema_with_tools(tmp_path):
    rows = bfcl.convert_category(bfcl.BfclSource(build_wheel(tmp_path)), "bfcl_simple")
    assert [r["extra_info"]["source_id"] for r in rows] == ["simple_python_0", "simple_python_1", "simple_python_2"]
    first = rows[0]
    assert first["data_source"] == "bfcl_simple" and first["ability"] == "function_call"
    assert first["prompt"] == [{"role": "user", "content": "How warm is it in Paris right now, in celsius?"}]
    assert json.loads(first["reward_model"]["ground_truth"]) == [
        {"get_weather": {"city": ["Paris", "Paris, France"], "unit": ["c", ""]}}]
    info = first["extra_info"]
    assert info["verifier"] == "function_call" and info["category"] == "simple_python" and info["index"] == 0
    assert json.loads(info["tools"])[0]["parameters"]["type"] == "dict"  # BFCL's own docs for the verifier
    # the chat template's tools: JSON Schema types, BFCL's "optional" flag dropped, the rest kept
    mean = json.loads(rows[1]["tools"])[0]
    assert mean["type"] == "function" and mean["function"]["name"] == "stats.mean"
    assert mean["function"]["parameters"] == {"type": "object", "required": ["numbers"], "properties": {
        "numbers": {"type": "array", "items": {"type": "number"}, "description": "The numbers."},
        "round_to": {"type": "integer", "description": "Decimals to round to."}}}
    book = json.loads(rows[2]["tools"])[0]["function"]["parameters"]["properties"]
    assert book["party"]["type"] == "object" and book["party"]["properties"]["adults"] == {
        "type": "integer", "description": "Adults."}
    assert book["slot"]["type"] == "array" and book["note"]["type"] == "string"


def test_system_messages_are_kept(tmp_path):
    rows = bfcl.convert_category(bfcl.BfclSource(FIXTURES), "bfcl_multiple")
    assert [m["role"] for m in rows[1]["prompt"]] == ["system", "user"]
    assert len(json.loads(rows[1]["tools"])) == 2


def test_split_is_deterministic_disjoint_and_near_the_fraction():
    ids = [f"simple_python_{i}" for i in range(2000)]
    first = [bfcl.split_of(i) for i in ids]
    assert first == [bfcl.split_of(i) for i in ids]
    assert abs(first.count("test") / len(ids) - 0.2) < 0.03
    other_salt = [bfcl.split_of(i, salt="another") for i in ids]
    assert other_salt != first
    assert all(bfcl.split_of(i, eval_fraction=0.0) == "train" for i in ids[:50])
    assert all(bfcl.split_of(i, eval_fraction=1.0) == "test" for i in ids[:50])


def test_prepare_writes_both_splits_disjoint(tmp_path):
    stats = bfcl.prepare_bfcl(NAMES, str(tmp_path / "out"), wheel=build_wheel(tmp_path), eval_fraction=0.5)
    assert [(s["dataset"], s["rows"]) for s in stats] == [(n, k) for n, k in zip(NAMES, (3, 2, 1, 1))]
    simple = stats[0]
    frames = {split: pd.read_parquet(path) for split, path in simple["paths"].items() if path}
    ids = {split: {e["source_id"] for e in f["extra_info"]} for split, f in frames.items()}
    assert sum(len(v) for v in ids.values()) == 3 and len(set().union(*ids.values())) == 3
    for split, frame in frames.items():
        assert set(frame.columns) == {"data_source", "prompt", "ability", "reward_model", "extra_info", "tools"}
        assert all(e["split"] == split for e in frame["extra_info"])
        assert all(e["split"] == bfcl.split_of(e["source_id"], 0.5) for e in frame["extra_info"])
    assert stats[1]["tools_per_row"] == {"min": 2, "mean": 2.0, "max": 2}


def test_cli_prints_rows_and_tools_per_row(tmp_path, capsys):
    assert data_main(["--out-dir", str(tmp_path), "--only", *NAMES, "--bfcl-wheel", build_wheel(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    stats = [json.loads(line) for line in out if line.startswith("{")]
    assert [(s["dataset"], s["rows"], s["train"] + s["test"]) for s in stats] == [
        ("bfcl_simple", 3, 3), ("bfcl_multiple", 2, 2), ("bfcl_parallel", 1, 1), ("bfcl_parallel_multiple", 1, 1)]
    table = [line for line in out if not line.startswith("{")]
    assert table[0].split()[:4] == ["dataset", "rows", "train", "test"]
    assert table[1].split()[:2] == ["bfcl_simple", "3"] and table[2].split()[-3:] == ["2", "2.0", "2"]


def test_rows_pass_the_verifier_with_their_first_alternatives(tmp_path):
    from verl_resrl.rewards.function_call import check

    row = bfcl.convert_category(bfcl.BfclSource(FIXTURES), "bfcl_parallel")[0]
    response = '[stock.price(ticker="MSFT"), stock.price(ticker="AAPL")]'
    assert check(response, row["reward_model"]["ground_truth"], row["extra_info"]["tools"]).reason == "correct"
    assert check(response, row["reward_model"]["ground_truth"], row["tools"]).reason == "correct"


@pytest.mark.parametrize("file, text, message", [
    ("BFCL_v4_simple_python.json", '{"id": "simple_python_0"\n', r"BFCL_v4_simple_python.json:1: not valid JSON"),
    ("BFCL_v4_simple_python.json", '{"id": "x", "question": [[{"role": "user", "content": "q"}]]}\n',
     r"BFCL_v4_simple_python.json:1: missing key\(s\) \['function'\]"),
    ("BFCL_v4_simple_python.json", "", r"BFCL_v4_simple_python.json: holds no entries"),
    ("BFCL_v4_simple_python.json",
     '{"id": "simple_python_0", "question": [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]],'
     ' "function": [{"name": "f", "parameters": {}}]}\n', r"entry 'simple_python_0': 'question' must hold exactly one"),
    ("BFCL_v4_simple_python.json",
     '{"id": "simple_python_0", "question": [[{"role": "user", "content": "a"}]], "function": [{"name": "f"}]}\n',
     r"entry 'simple_python_0': function\[0\] must have a string 'name' and an object 'parameters'"),
    ("possible_answer/BFCL_v4_simple_python.json", '{"id": "simple_python_0", "ground_truth": []}\n',
     r"possible_answer/BFCL_v4_simple_python.json: entry 'simple_python_0': 'ground_truth' must be a non-empty"),
    ("possible_answer/BFCL_v4_simple_python.json", '{"id": "simple_python_0", "ground_truth": [{"f": {}}]}\n',
     r"possible_answer/BFCL_v4_simple_python.json: no possible answer for id 'simple_python_1'"),
])
def test_malformed_files_raise_errors_naming_the_file(tmp_path, file, text, message):
    source = bfcl.BfclSource(build_wheel(tmp_path, {file: text}))
    with pytest.raises((ValueError, KeyError), match=message):
        bfcl.convert_category(source, "bfcl_simple")


def test_missing_category_file_and_bad_source_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="BFCL_v4_live_simple.json"):
        bfcl.convert_category(bfcl.BfclSource(FIXTURES), "bfcl_live_simple")
    junk = tmp_path / "junk.whl"
    junk.write_text("not a zip")
    with pytest.raises(ValueError, match="neither a bfcl-eval wheel"):
        bfcl.BfclSource(str(junk))
    with pytest.raises(ValueError, match="unknown BFCL dataset"):
        bfcl.prepare_bfcl(["bfcl_multi_turn_base"], str(tmp_path), wheel=FIXTURES)


def test_a_wheel_with_the_wrong_sha256_is_refused(tmp_path):
    (tmp_path / bfcl.BFCL_WHEEL).write_bytes(b"tampered")
    with pytest.raises(ValueError, match="is not the pinned"):
        bfcl.fetch_wheel(str(tmp_path))
