"""Turn source datasets into verl's RL parquet schema with our prompt template.

Output row (what verl's ``RLHFDataset`` and reward loop read)::

    data_source: str                       # SourceSpec.name, e.g. "aime2024"
    prompt: [{"role": "user", "content": math_prompt(problem)}]
    ability: "math"
    reward_model: {"style": "rule", "ground_truth": str}
    extra_info: {"index": int, "split": str, "source_id": str, "original_dataset": str, "num_source_rows": int,
                 + the spec's extra_keys as strings}
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from verl_resrl.data.sources import SourceSpec
from verl_resrl.data.templates import math_chat_prompt, problem_from_prompt

logger = logging.getLogger(__name__)

ABILITY = "math"
REQUIRED_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")


def to_python(value: Any) -> Any:
    """Plain Python containers from what pandas/pyarrow return (numpy arrays for lists, numpy scalars)."""
    if isinstance(value, np.ndarray):
        return [to_python(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_local_records(path: str) -> list[dict]:
    """Rows of a local parquet / json / jsonl file in a source schema."""
    import pandas as pd

    if path.endswith(".parquet"):
        frame = pd.read_parquet(path)
    elif path.endswith(".jsonl"):
        frame = pd.read_json(path, lines=True, dtype=False)
    elif path.endswith(".json"):
        frame = pd.read_json(path, dtype=False)
    else:
        raise ValueError(f"source file must be .parquet, .json or .jsonl: {path}")
    return [to_python(record) for record in frame.to_dict(orient="records")]


def iter_source_records(spec: SourceSpec, source_file: str | None = None, hf_path: str | None = None) -> Iterator[dict]:
    """Records of ``spec``'s source: from ``source_file`` if given, else downloaded by name with ``datasets``."""
    if source_file is not None:
        yield from read_local_records(source_file)
        return
    import datasets  # imported here: only the download path needs it

    dataset = datasets.load_dataset(hf_path or spec.hf_path, spec.hf_config, split=spec.hf_split)
    for record in dataset:
        yield to_python(record)


def _missing(value: Any) -> bool:
    """None, NaN, or an empty string / list."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, (str, list)) and len(value) == 0


def pick(record: dict, keys: tuple[str, ...], what: str, row: int) -> Any:
    """The value of the first of ``keys`` present and non-empty in ``record``; a clear error if none is."""
    for key in keys:
        if key in record and not _missing(record[key]):
            return record[key]
    raise KeyError(f"row {row}: no non-empty {what} in columns {list(keys)} (row has columns {sorted(record)})")


def _strip_math_delimiters(text: str) -> str:
    """'$\\frac{1}{2}$' -> '\\frac{1}{2}' (OlympiadBench wraps its final answers in inline-math dollars)."""
    text = text.strip()
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    return text


def answer_text(value: Any, row: int) -> str:
    """A ground truth as a string: integral floats lose their '.0', lists are joined with ', '."""
    if isinstance(value, bool):
        raise ValueError(f"row {row}: boolean answer {value!r} is not a math answer")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"row {row}: answer is {value!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list):
        parts = [answer_text(v, row) for v in value]
        return ", ".join(p for p in parts if p)
    if isinstance(value, str):
        return _strip_math_delimiters(value)
    raise TypeError(f"row {row}: unsupported answer type {type(value).__name__}: {value!r}")


def _problem_and_answer(spec: SourceSpec, record: dict, row: int) -> tuple[str, str, str]:
    """(problem, ground truth, source id) of one source record."""
    if spec.layout == "dapo":
        prompt = pick(record, ("prompt",), "prompt", row)
        if not (isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict) and "content" in prompt[-1]):
            raise ValueError(f"row {row}: prompt must be a list of chat messages, got {prompt!r:.120}")
        problem = problem_from_prompt(prompt[-1]["content"])
        reward_model = pick(record, ("reward_model",), "reward_model", row)
        answer = pick(reward_model, ("ground_truth",), "reward_model.ground_truth", row)
        source_id = (record.get("extra_info") or {}).get("index", row)
    else:
        problem = str(pick(record, spec.problem_keys, "problem", row)).strip()
        context = record.get(spec.context_key) if spec.context_key else None
        if not _missing(context):
            problem = f"{str(context).strip()}\n\n{problem}"
        answer = pick(record, spec.answer_keys, "answer", row)
        source_id = next((record[k] for k in spec.id_keys if not _missing(record.get(k))), row)
    ground_truth = answer_text(answer, row)
    if not ground_truth:
        raise ValueError(f"row {row}: empty ground truth after normalisation (raw {answer!r})")
    return problem, ground_truth, str(source_id)


def _dedupe_key(problem: str) -> str:
    """Problems equal up to whitespace are the same problem."""
    return " ".join(problem.split())


def convert_records(
    spec: SourceSpec, records: Iterable[dict], original_dataset: str | None = None
) -> tuple[list[dict], dict]:
    """verl rows for ``records`` plus stats {source_rows, rows, duplicates_dropped, conflicting_duplicates}.

    With ``spec.deduplicate`` the first occurrence of each problem is kept and the repeats are counted in its
    ``extra_info.num_source_rows``; a repeat whose ground truth differs is counted as a conflict and logged.
    """
    rows: list[dict] = []
    first_row: dict[str, int] = {}
    stats = {"source_rows": 0, "rows": 0, "duplicates_dropped": 0, "conflicting_duplicates": 0}
    for index, record in enumerate(records):
        stats["source_rows"] += 1
        problem, ground_truth, source_id = _problem_and_answer(spec, record, index)
        key = _dedupe_key(problem)
        if spec.deduplicate and key in first_row:
            kept = rows[first_row[key]]
            kept["extra_info"]["num_source_rows"] += 1
            stats["duplicates_dropped"] += 1
            if kept["reward_model"]["ground_truth"] != ground_truth:
                stats["conflicting_duplicates"] += 1
                logger.warning(
                    "%s row %d repeats problem of kept row %s with a different ground truth (%r vs kept %r)",
                    spec.name,
                    index,
                    kept["extra_info"]["source_id"],
                    ground_truth,
                    kept["reward_model"]["ground_truth"],
                )
            continue
        first_row[key] = len(rows)
        extra = {k: "" if _missing(record.get(k)) else str(record.get(k)) for k in spec.extra_keys}
        rows.append(
            {
                "data_source": spec.name,
                "prompt": math_chat_prompt(problem),
                "ability": ABILITY,
                "reward_model": {"style": "rule", "ground_truth": ground_truth},
                "extra_info": {
                    "index": len(rows),
                    "split": spec.out_split,
                    "source_id": source_id,
                    "original_dataset": original_dataset or spec.hf_path,
                    "num_source_rows": 1,
                    **extra,
                },
            }
        )
    stats["rows"] = len(rows)
    if stats["source_rows"] == 0:
        raise ValueError(f"{spec.name}: the source holds no rows")
    return rows, stats


def validate_rows(rows: list[dict]) -> None:
    """Raise naming the row and key when a row does not follow verl's RL parquet schema."""
    for i, row in enumerate(rows):
        for key in REQUIRED_COLUMNS:
            if key not in row:
                raise KeyError(f"row {i}: missing column {key!r}")
        prompt = row["prompt"]
        if not (isinstance(prompt, list) and prompt and all({"role", "content"} <= set(m) for m in prompt)):
            raise ValueError(f"row {i}: prompt must be a non-empty list of {{role, content}} messages")
        gt = row["reward_model"].get("ground_truth")
        if not isinstance(gt, str) or not gt:
            raise ValueError(f"row {i}: reward_model.ground_truth must be a non-empty string, got {gt!r}")
        if not isinstance(row["extra_info"].get("index"), int):
            raise ValueError(f"row {i}: extra_info.index must be an int")


def write_parquet(rows: list[dict], path: str) -> None:
    """Validate and write ``rows`` to ``path`` (parent folders created)."""
    import pandas as pd

    validate_rows(rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS)).to_parquet(path, index=False)


def prepare(spec: SourceSpec, out_dir: str, source_file: str | None = None, hf_path: str | None = None) -> dict:
    """Convert one dataset into ``{out_dir}/{spec.name}.parquet``; returns the stats and the output path."""
    records = iter_source_records(spec, source_file=source_file, hf_path=hf_path)
    rows, stats = convert_records(spec, records, original_dataset=hf_path or spec.hf_path)
    path = os.path.join(out_dir, f"{spec.name}.parquet")
    write_parquet(rows, path)
    logger.info("%s: %d source rows -> %d rows at %s", spec.name, stats["source_rows"], stats["rows"], path)
    return {**stats, "path": path}
