"""BFCL v4 multi-turn base as verl parquet rows for the state-based multi-turn check.

Read from the same pinned ``bfcl-eval`` wheel as the single-turn categories (``verl_resrl.data.bfcl``), as a zip
file or an unpacked folder, never installed. Three kinds of file: ``bfcl_eval/data/BFCL_v4_multi_turn_base.json``
(id, question turns, initial_config, involved_classes, excluded_function), ``possible_answer/...`` (the gold calls
per turn, Python call strings) and ``multi_turn_func_doc/<backend>.json`` (the function docs of each backend class).

Output row (docs/bfcl_multi_turn.md)::

    data_source: "bfcl_multi_turn_base"
    prompt: the first turn's messages (a system message first if the turn has one)
    ability: "function_call"
    reward_model: {"style": "rule", "ground_truth": JSON [[{name: {param: value}}, ...] per turn]}
    tools: JSON of the chat template's tools (OpenAI style, JSON Schema types) of every offered function
    extra_info: {"index", "split", "source_id", "category", "verifier": "function_call_multi_turn",
                 "user_turns": JSON of the remaining turns' messages, "involved_classes": JSON list,
                 "initial_config": JSON, "tools": JSON of BFCL's own docs, "excluded_functions": JSON list,
                 "num_turns", "original_dataset"}

``extract_backends`` puts BFCL's backend modules of the pinned wheel into the cache for the verifier, which sends
them, compiled once per process (``compiled_backends``), into its sandbox. Gold calls are rewritten with keyword
arguments only: BFCL writes a few with one positional argument (``sort('final_report.pdf')``); it is named after
the doc's parameter order (tests check this against the backend's signature).
"""

from __future__ import annotations

import ast
import base64
import functools
import json
import logging
import marshal
import os
import shutil
import tempfile
import zipfile

from verl_resrl.data import bfcl
from verl_resrl.rewards.function_call_multi_turn import BACKEND_FILES, BACKEND_PACKAGE, SHARED_FILES, VERIFIER

logger = logging.getLogger(__name__)

DATASETS = {"bfcl_multi_turn_base": "multi_turn_base"}
DOC_DIR = "multi_turn_func_doc"
BACKEND_DIR = BACKEND_PACKAGE.replace(".", "/")  # inside the wheel


def extract_backends(wheel: str | None = None, cache_dir: str | None = None) -> str:
    """The folder holding BFCL's backend modules, extracted once from the pinned wheel (its sha256 is checked)."""
    cache_dir = cache_dir or bfcl.DEFAULT_CACHE
    target = os.path.join(cache_dir, f"backends-{bfcl.BFCL_VERSION}")
    names = [f"{stem}.py" for stem in (*BACKEND_FILES.values(), *SHARED_FILES)]
    if all(os.path.isfile(os.path.join(target, n)) for n in names):
        return target
    wheel = wheel or os.path.join(cache_dir, bfcl.BFCL_WHEEL)
    if not os.path.isfile(wheel):
        raise FileNotFoundError(f"{wheel}: the pinned bfcl-eval wheel is not there; `python -m verl_resrl.data "
                                f"--out-dir DIR --only bfcl_multi_turn_base` downloads it (or pass backend_dir)")
    if bfcl.sha256_of(wheel) != bfcl.BFCL_WHEEL_SHA256:
        raise ValueError(f"{wheel}: not the pinned bfcl-eval=={bfcl.BFCL_VERSION} wheel (sha256 differs)")
    staging = tempfile.mkdtemp(dir=cache_dir, prefix=".backends-")
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the folder from other users of the cache
    with zipfile.ZipFile(wheel) as z:
        for name in names:
            with open(os.path.join(staging, name), "wb") as f:
                f.write(z.read(f"{BACKEND_DIR}/{name}"))
    try:
        os.rename(staging, target)  # atomic: concurrent workers never see half a folder
    except OSError:  # another worker extracted it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=8)
def compiled_backends(folder: str) -> dict[str, str]:
    """Module name -> base64 of the marshalled code of every ``.py`` in ``folder`` (compiled once per process)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                code = compile(f.read(), path, "exec")
            out[f"{BACKEND_PACKAGE}.{name[:-3]}"] = base64.b64encode(marshal.dumps(code)).decode()
    if not out:
        raise FileNotFoundError(f"{folder}: no backend modules (*.py)")
    return out


def load_docs(source: bfcl.BfclSource, classes: list[str], where: str) -> dict[str, list[dict]]:
    """Class name -> its function docs, in the doc file's order; errors name the class and file."""
    out = {}
    for name in classes:
        if name not in BACKEND_FILES:
            raise ValueError(f"{where}: unknown class {name!r} in 'involved_classes'; known: {sorted(BACKEND_FILES)}")
        filename = f"{DOC_DIR}/{BACKEND_FILES[name]}.json"
        docs = bfcl.read_jsonl(source.read(filename), filename, ("name", "parameters"))
        for j, doc in enumerate(docs):
            if not isinstance(doc["name"], str) or not isinstance(doc["parameters"], dict):
                raise ValueError(f"{filename}:{j + 1}: needs a string 'name' and an object 'parameters'")
        out[name] = docs
    return out


def offered_docs(docs: dict[str, list[dict]], classes: list[str], excluded: list[str]) -> list[dict]:
    """The docs offered to the model: every involved class's functions in order, the excluded ones left out."""
    return [doc for name in classes for doc in docs[name] if doc["name"] not in excluded]


def _literal(node: ast.AST, where: str):
    """A literal argument's value (tuples as lists, like the response parser); anything else is an error."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        raise ValueError(f"{where}: argument is not a literal") from None
    return json.loads(json.dumps(value))  # tuples -> lists; refuses sets and other non-JSON values


def parse_gold_call(text: str, docs: dict[str, dict], where: str) -> dict:
    """One gold call string, e.g. ``mv(source='a', destination='b')`` -> ``{"mv": {"source": "a", ...}}``."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"{where}: {text!r} is not a Python call") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"{where}: {text!r} is not a call of a plain function name")
    name = node.func.id
    if name not in docs:
        raise ValueError(f"{where}: {text!r} calls {name!r}, which is not among the offered functions")
    params = list(docs[name]["parameters"].get("properties", {}))
    if len(node.args) > len(params):
        raise ValueError(f"{where}: {text!r} has more positional arguments than {name} has parameters")
    args = {params[i]: _literal(arg, f"{where}: {name} argument {i}") for i, arg in enumerate(node.args)}
    for kw in node.keywords:
        if kw.arg is None or kw.arg in args:
            raise ValueError(f"{where}: {text!r} repeats a parameter or uses **kwargs")
        if kw.arg not in params:
            raise ValueError(f"{where}: {text!r} passes {kw.arg!r}, which is not a parameter of {name}")
        args[kw.arg] = _literal(kw.value, f"{where}: {name}.{kw.arg}")
    return {name: args}


def _validate_entry(entry: dict, where: str) -> None:
    """Turns of {role, content} messages, a dict initial_config, a non-empty class list, excluded names."""
    turns = entry["question"]
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"{where}: 'question' must be a non-empty list of turns")
    for i, turn in enumerate(turns):
        if not isinstance(turn, list) or not turn:
            raise ValueError(f"{where}: question[{i}] must be a non-empty list of messages")
        for j, msg in enumerate(turn):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(
                    msg.get("content"), str):
                raise ValueError(f"{where}: question[{i}][{j}] must be a {{role, content}} message")
    if not isinstance(entry["initial_config"], dict):
        raise ValueError(f"{where}: 'initial_config' must be an object")
    classes = entry["involved_classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{where}: 'involved_classes' must be a non-empty list of class names")
    excluded = entry.get("excluded_function", [])
    if not isinstance(excluded, list) or not all(isinstance(e, str) for e in excluded):
        raise ValueError(f"{where}: 'excluded_function' must be a list of function names")


def load_multi_turn(source: bfcl.BfclSource, category: str) -> list[dict]:
    """[{"entry", "docs" (offered), "gold" (per turn)}] of one multi-turn category, in the file's order."""
    aname = f"possible_answer/BFCL_v4_{category}.json"
    out = []
    for entry, gold in bfcl.read_paired(source, category, ("id", "question", "initial_config", "involved_classes"),
                                        _validate_entry, missing="no ground truth"):
        where = f"BFCL_v4_{category}.json: entry {entry['id']!r}"
        docs = load_docs(source, entry["involved_classes"], where)
        offered = offered_docs(docs, entry["involved_classes"], entry.get("excluded_function", []))
        out.append({"entry": entry, "docs": offered,
                    "gold": _gold_turns(gold, entry, offered, f"{aname}: entry {entry['id']!r}")})
    return out


def _gold_turns(turns, entry: dict, offered: list[dict], where: str) -> list[list[dict]]:
    """The gold call strings of every turn as keyword-only calls; one list per question turn."""
    if not isinstance(turns, list) or len(turns) != len(entry["question"]):
        raise ValueError(f"{where}: 'ground_truth' must hold one call list per question turn "
                         f"({len(entry['question'])})")
    by_name = {doc["name"]: doc for doc in offered}
    gold = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, list) or not all(isinstance(c, str) for c in turn):
            raise ValueError(f"{where}: ground_truth[{i}] must be a list of call strings")
        gold.append([parse_gold_call(c, by_name, f"{where}: ground_truth[{i}][{j}]") for j, c in enumerate(turn)])
    return gold


def convert_multi_turn(source: bfcl.BfclSource, name: str, eval_fraction: float = bfcl.DEFAULT_EVAL_FRACTION,
                       salt: str = bfcl.DEFAULT_SPLIT_SALT,
                       original_dataset: str = f"bfcl-eval=={bfcl.BFCL_VERSION}") -> list[dict]:
    """verl rows of dataset ``name`` (a key of ``DATASETS``), both splits, in the source's order."""
    rows = []
    for index, item in enumerate(load_multi_turn(source, DATASETS[name])):
        entry = item["entry"]
        turns = [[{"role": m["role"], "content": m["content"]} for m in turn] for turn in entry["question"]]
        rows.append({
            "data_source": name,
            "prompt": turns[0],
            "ability": bfcl.ABILITY,
            "reward_model": {"style": "rule", "ground_truth": _dump(item["gold"])},
            "tools": _dump(bfcl.openai_tools(item["docs"])),
            "extra_info": {
                "index": index,
                "split": bfcl.split_of(entry["id"], eval_fraction, salt),
                "source_id": entry["id"],
                "category": DATASETS[name],
                "verifier": VERIFIER,
                "user_turns": _dump(turns[1:]),
                "involved_classes": _dump(entry["involved_classes"]),
                "initial_config": _dump(entry["initial_config"]),
                "tools": _dump(item["docs"]),
                "excluded_functions": _dump(entry.get("excluded_function", [])),
                "num_turns": len(turns),
                "original_dataset": original_dataset,
            },
        })
    return rows


def _dump(value) -> str:
    """JSON text of a nested value (parquet would merge the keys of every row's dicts into one struct type)."""
    return json.dumps(value, ensure_ascii=False)


def _spread(values: list) -> dict:
    """min / mean / max."""
    return {"min": min(values), "mean": round(sum(values) / len(values), 2), "max": max(values)}


def _row_stats(name: str, rows: list[dict], paths: dict) -> dict:
    """Rows per split, tools per row, turns and gold calls per row."""
    turns = [r["extra_info"]["num_turns"] for r in rows]
    calls = [sum(len(t) for t in json.loads(r["reward_model"]["ground_truth"])) for r in rows]
    return {"dataset": name, "rows": len(rows),
            "train": sum(r["extra_info"]["split"] == "train" for r in rows),
            "test": sum(r["extra_info"]["split"] == "test" for r in rows),
            "tools_per_row": bfcl.tools_per_row(rows), "turns_per_row": _spread(turns),
            "gold_calls_per_row": _spread(calls), "paths": paths}


def prepare_multi_turn(names: list[str], out_dir: str, wheel: str | None = None, cache_dir: str = bfcl.DEFAULT_CACHE,
                       eval_fraction: float = bfcl.DEFAULT_EVAL_FRACTION,
                       salt: str = bfcl.DEFAULT_SPLIT_SALT) -> list[dict]:
    """Write ``{out_dir}/{name}_{train,test}.parquet`` per dataset and extract the backends; one stats dict each."""
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction!r}")
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise ValueError(f"unknown BFCL multi-turn dataset(s) {unknown}; known: {sorted(DATASETS)}")
    path = wheel or bfcl.fetch_wheel(cache_dir)
    original = f"bfcl-eval=={bfcl.BFCL_VERSION}" if wheel is None else os.path.basename(path.rstrip("/"))
    source = bfcl.BfclSource(path)
    stats = []
    for name in names:
        rows = convert_multi_turn(source, name, eval_fraction, salt, original)
        paths = {}
        for split in ("train", "test"):
            part = [r for r in rows if r["extra_info"]["split"] == split]
            paths[split] = os.path.join(out_dir, f"{name}_{split}.parquet") if part else None
            if part:
                bfcl.write_rows(part, paths[split])
            else:  # a tiny eval fraction or source can leave a split empty: say so, write nothing
                logger.warning("%s: no %s rows", name, split)
        stats.append(_row_stats(name, rows, paths))
    if os.path.isfile(path) and bfcl.sha256_of(path) == bfcl.BFCL_WHEEL_SHA256:
        # the verifier's workers read the pinned backends from the cache (docs/bfcl_multi_turn.md); another wheel's
        # backends (a test fixture, another version) must not land in the pinned version's folder
        logger.info("BFCL backends in %s", extract_backends(path, cache_dir))
    return stats
