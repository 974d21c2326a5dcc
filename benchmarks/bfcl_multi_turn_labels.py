"""Peer suite: the multi-turn state-based check on every BFCL v4 multi_turn_base entry's own gold calls.

    python benchmarks/bfcl_multi_turn_labels.py [--wheel PATH] [--seed 0] [--per-kind 100] [--save FILE.json]

1. Positives: each entry's gold calls, turn by turn, rendered as the model's response of that turn in both syntaxes
   (Qwen/Hermes ``<tool_call>`` JSON and a Python call list), must score ``correct`` against the same gold calls on
   BFCL's own backends; every exception is listed with the verifier's detail.
2. Negatives: seeded perturbations of the gold rendering, ``--per-kind`` of each kind: a wrong argument value
   (``perturb_value``), a missing call (one gold call dropped) and a wrong function (one call renamed to another
   offered function, same arguments). Each must not score ``correct``; every exception is listed with its call.
   The wrong-function draws are also scored with ``strict_calls=False`` (BFCL's own leniency: a call that does not
   fit is an error result, not a wrong turn), so the state and response checks alone are measured on them too.

Without ``--wheel`` the pinned bfcl-eval wheel is taken from (or downloaded into) ~/.cache/verl_resrl/bfcl.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import platform
import random
import sys
import time

from verl_resrl.data import bfcl
from verl_resrl.data.bfcl_multi_turn import convert_multi_turn
from verl_resrl.rewards.function_call_multi_turn import check

KINDS = ("wrong_value", "missing_call", "wrong_function")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bfcl_multi_turn_labels.json")


def hermes(calls: list[dict]) -> str:
    """One turn's calls as <tool_call> blocks."""
    return "".join(f"<tool_call>\n{json.dumps({'name': n, 'arguments': a})}\n</tool_call>\n"
                   for call in calls for n, a in call.items())


def python_list(calls: list[dict]) -> str:
    """One turn's calls as a Python call list (repr of JSON values is a Python literal; bools and None included)."""
    return "[" + ", ".join(f"{n}(" + ", ".join(f"{k}={v!r}" for k, v in a.items()) + ")"
                           for call in calls for n, a in call.items()) + "]"


def verdict_of(row: dict, responses: list[str], **options):
    """The verifier's verdict on one row."""
    info = row["extra_info"]
    return check(responses, row["reward_model"]["ground_truth"], info["initial_config"], info["involved_classes"],
                 info["tools"], **options)


def perturb_value(value):
    """A different value of the same JSON type: strings get a suffix, numbers +1, bools flip, lists lose their
    last item (or gain one), dicts lose a key (or gain one), None becomes a string."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return value[:-1] if value else ["x"]
    if isinstance(value, dict):
        return {k: v for k, v in list(value.items())[:-1]} if value else {"x": 1}
    return "x"


def apply(kind: str, gold: list[list[dict]], names: list[str], rng: random.Random):
    """(perturbed turns, note) or None when ``kind`` does not apply to the drawn call."""
    spots = [(t, i) for t, turn in enumerate(gold) for i in range(len(turn))]
    t, i = spots[rng.randrange(len(spots))]
    (name, args), = gold[t][i].items()
    turns = copy.deepcopy(gold)
    if kind == "missing_call":
        del turns[t][i]
        return turns, f"turn {t}: dropped {name}({_args(args)})"
    if kind == "wrong_function":
        other = rng.choice([n for n in names if n != name])
        turns[t][i] = {other: args}
        return turns, f"turn {t}: {name} -> {other}({_args(args)})"
    if not args:
        return None
    param = rng.choice(sorted(args))
    turns[t][i][name][param] = perturb_value(args[param])
    return turns, f"turn {t}: {name}.{param}: {args[param]!r} -> {turns[t][i][name][param]!r}"


def _args(args: dict) -> str:
    """Arguments as k=v text, cut short."""
    return ", ".join(f"{k}={v!r}" for k, v in args.items())[:120]


def positives(rows: list[dict]) -> dict:
    """Every row's gold rendered in both syntaxes; counts and exceptions."""
    counts, exceptions, seconds = collections.Counter(), [], []
    for row in rows:
        gold = json.loads(row["reward_model"]["ground_truth"])
        counts["entries"] += 1
        counts["turns"] += len(gold)
        counts["calls"] += sum(len(t) for t in gold)
        for syntax, render in (("hermes", hermes), ("python", python_list)):
            start = time.monotonic()
            verdict = verdict_of(row, [render(t) for t in gold])
            seconds.append(time.monotonic() - start)
            counts[f"{syntax}_correct"] += verdict.reason == "correct"
            if verdict.reason != "correct":
                exceptions.append({"id": row["extra_info"]["source_id"], "syntax": syntax,
                                   "reason": verdict.reason, "detail": verdict.detail})
    return {**counts, "exceptions": exceptions, "seconds_per_check": _spread(seconds)}


def negatives(rows: list[dict], seed: int, per_kind: int) -> dict:
    """Seeded perturbations, ``per_kind`` of each kind; counts per kind and every exception."""
    rng, out, exceptions, seconds = random.Random(seed), {}, [], []
    lenient, lenient_exceptions = collections.Counter(), []
    for kind in KINDS:
        stats = collections.Counter()
        while stats["n"] < per_kind:
            row = rows[rng.randrange(len(rows))]
            names = [t["function"]["name"] for t in json.loads(row["tools"])]
            applied = apply(kind, json.loads(row["reward_model"]["ground_truth"]), names, rng)
            if applied is None:
                stats["skipped_draws"] += 1
                continue
            turns, note = applied
            start = time.monotonic()
            verdict = verdict_of(row, [hermes(t) for t in turns])
            seconds.append(time.monotonic() - start)
            stats["n"] += 1
            stats[f"reason_{verdict.reason}"] += 1
            if verdict.reason == "correct":
                exceptions.append({"id": row["extra_info"]["source_id"], "kind": kind, "change": note})
            if kind == "wrong_function":
                soft = verdict_of(row, [hermes(t) for t in turns], strict_calls=False)
                lenient["n"] += 1
                lenient[f"reason_{soft.reason}"] += 1
                if soft.reason == "correct":
                    lenient_exceptions.append({"id": row["extra_info"]["source_id"], "change": note})
        out[kind] = dict(stats)
    return {"per_kind": out, "exceptions": exceptions, "wrong_function_lenient": {**lenient, "exceptions": lenient_exceptions},
            "seconds_per_check": _spread(seconds)}


def _spread(xs: list[float]) -> dict:
    """min / mean / max seconds."""
    return {"min": round(min(xs), 3), "mean": round(sum(xs) / len(xs), 3), "max": round(max(xs), 3)} if xs else {}


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo where there is one) and the core count."""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def main(argv=None) -> int:
    """Run both parts, print and save the figures; exit 1 if a positive fails or over 1% of negatives pass."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", help="bfcl-eval wheel or unpacked folder (default: the pinned wheel)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-kind", type=int, default=100)
    parser.add_argument("--save", default=RESULTS, help=f"JSON file for the figures (default {RESULTS})")
    args = parser.parse_args(argv)
    path = args.wheel or bfcl.fetch_wheel()
    start = time.monotonic()
    rows = convert_multi_turn(bfcl.BfclSource(path), "bfcl_multi_turn_base")
    result = {"wheel": os.path.basename(path), "sha256": bfcl.sha256_of(path) if os.path.isfile(path) else None,
              "seed": args.seed, "cpu": cpu_name(), "positives": positives(rows),
              "negatives": negatives(rows, args.seed, args.per_kind)}
    result["wall_s"] = round(time.monotonic() - start, 1)
    text = json.dumps(result, indent=1)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
    with open(args.save, "w") as f:
        f.write(text + "\n")
    pos = result["positives"]
    n = sum(k["n"] for k in result["negatives"]["per_kind"].values())
    ok = pos["hermes_correct"] == pos["python_correct"] == pos["entries"]
    return 0 if ok and len(result["negatives"]["exceptions"]) <= 0.01 * n else 1


if __name__ == "__main__":
    sys.exit(main())
