"""Peer-suite check: our math verifier against the labels of the Math-Verify repository's own tests.

Run: ``.venv/bin/python benchmarks/math_verify_suite.py CHECKOUT [--wrapping boxed|raw] [--json PATH]``

``CHECKOUT`` is a local checkout of github.com/huggingface/Math-Verify (nothing from it is part of this project).
Every parametrised test case of ``CHECKOUT/tests/test_*.py`` that has a gold and a prediction is collected from the
test functions' own ``pytest.mark.parametrize`` marks (269 cases at commit 5d148cf). Each case is scored by
``verl_resrl.rewards.math.score`` with the prediction as the response and the gold as the ground truth:

- ``boxed`` (default): the response is ``\\boxed{<prediction>}``, the way a policy states a final answer;
- ``raw``: the response is the prediction as written (only those with their own box or ``Answer:`` line can score).

Agreement means: our verdict (``correct`` or not) equals the test's label. For every disagreement the script prints
the answers we extracted and a cause, found by re-running the case through math-verify itself:

- ``mv-fails``: the installed math-verify does not pass this case either (its label is aspirational);
- ``setting``: the test runs math-verify with a non-default setting (precision, ``strict=False``, set/relation
  comparison, one extraction type) and math-verify with our fixed settings gives our verdict;
- ``ours``: math-verify with our settings agrees with the label, so the difference comes from our extraction,
  normalisation or fallback.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib
import importlib.metadata
import json
import os
import sys

OUR_SETTINGS = {"float_rounding": 6, "strict": True, "allow_set_relation_comp": False, "targets": "latex+expr"}


def collect_cases(checkout: str) -> list[dict]:
    """Every (gold, pred, label) case of the checkout's parametrised tests, with its test function."""
    sys.path.insert(0, checkout)  # the suite imports itself as ``tests.test_all``
    cases = []
    for name in sorted(os.listdir(os.path.join(checkout, "tests"))):
        if not (name.startswith("test_") and name.endswith(".py")):
            continue
        module = importlib.import_module(f"tests.{name[:-3]}")
        for attr in sorted(vars(module)):
            func = getattr(module, attr)
            if not (attr.startswith("test") and callable(func)):
                continue
            for mark in getattr(func, "pytestmark", []):
                if mark.name != "parametrize":
                    continue
                argnames = [a.strip() for a in mark.args[0].split(",")]
                if "gold" not in argnames or "pred" not in argnames:
                    continue
                label_key = "expected" if "expected" in argnames else "result"
                for index, values in enumerate(mark.args[1]):
                    params = dict(zip(argnames, values))
                    cases.append({"file": name, "test": attr, "index": index, "module": module, "func": func,
                                  "params": params, "gold": params["gold"], "pred": params["pred"],
                                  "label": bool(params[label_key])})
    return cases


def math_verify_run(case: dict) -> dict:
    """Run the case's own test function, recording the settings it hands math-verify and whether it passes."""
    import math_verify

    seen = {"float_rounding": 6, "strict": True, "allow_set_relation_comp": False, "targets": set()}

    def parse(text, extraction_config=None, **kwargs):
        """math-verify's parse, noting the extraction targets."""
        configs = extraction_config or [math_verify.LatexExtractionConfig(), math_verify.ExprExtractionConfig()]
        seen["targets"] |= {type(c).__name__.replace("ExtractionConfig", "").lower() for c in configs}
        return math_verify.parse(text, extraction_config or configs, **kwargs)

    def verify(gold, pred, **kwargs):
        """math-verify's verify, noting the non-default keyword arguments."""
        seen.update({k: v for k, v in kwargs.items() if k in seen})
        return math_verify.verify(gold, pred, **kwargs)

    modules = {case["module"], sys.modules["tests.test_all"]}  # compare_strings lives in test_all
    saved = [(m, m.__dict__.get("parse"), m.__dict__.get("verify")) for m in modules]
    for m in modules:
        m.parse, m.verify = parse, verify
    try:
        case["func"](**case["params"])
        passes = True
    except AssertionError:
        passes = False
    finally:
        for m, p, v in saved:
            m.parse, m.verify = p, v
    order = {"latex": 0, "expr": 1}
    seen["targets"] = "+".join(sorted(seen["targets"], key=order.get))
    return {"passes": passes, "settings": seen}


def math_verify_with_our_settings(gold: str, pred: str) -> bool:
    """math-verify on the raw gold and the boxed prediction with the settings our verifier uses."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return bool(verify(parse(gold, configs), parse(f"\\boxed{{{pred}}}", configs)))


def evaluate(cases: list[dict], wrapping: str) -> list[dict]:
    """Our verdict, math-verify's, and the cause of each disagreement."""
    from verl_resrl.rewards.math import score, warm_up
    from verl_resrl.rewards.math_answer import unwrap_ground_truth

    warm_up()
    rows = []
    for case in cases:
        response = f"\\boxed{{{case['pred']}}}" if wrapping == "boxed" else case["pred"]
        result = score(response, case["gold"], reward_convention="binary", timeout_s=10.0)
        ours = result["reason"] == "correct"
        row = {k: case[k] for k in ("file", "test", "index", "gold", "pred", "label")}
        row.update(ours=ours, reason=result["reason"], answer=result["answer"],
                   gold_answer=unwrap_ground_truth(case["gold"]), agree=ours == case["label"])
        if not row["agree"]:
            run = math_verify_run(case)
            differs = {k: v for k, v in run["settings"].items() if OUR_SETTINGS[k] != v}
            if not run["passes"]:
                row["cause"] = "mv-fails"
            elif differs and math_verify_with_our_settings(case["gold"], case["pred"]) == ours:
                row["cause"] = "setting: " + ", ".join(f"{k}={v}" for k, v in sorted(differs.items()))
            else:
                row["cause"] = "ours"
        rows.append(row)
    return rows


def short(text: str) -> str:
    """A long case shortened to its start and end, on one line."""
    return (text if len(text) <= 110 else text[:60] + " ... " + text[-45:]).replace("\n", "\\n")


def suite_fingerprint(checkout: str) -> str:
    """sha256 (first 12 hex digits) of the checkout's test files, to name the suite version a run used."""
    digest = hashlib.sha256()
    folder = os.path.join(checkout, "tests")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:12]


def report(rows: list[dict], wrapping: str) -> dict:
    """Print agreement per file and every disagreement; return the summary."""
    per_file = collections.defaultdict(lambda: [0, 0])
    for row in rows:
        per_file[row["file"]][0] += row["agree"]
        per_file[row["file"]][1] += 1
    print(f"wrapping: {wrapping}")
    for name, (agree, total) in sorted(per_file.items()):
        print(f"  {name:28s} {agree:4d} / {total:4d}")
    agree = sum(r["agree"] for r in rows)
    print(f"  {'total':28s} {agree:4d} / {len(rows):4d}")
    causes = collections.Counter(r["cause"].split(":")[0] for r in rows if not r["agree"])
    print("disagreements by cause:", dict(sorted(causes.items())))
    for r in rows:
        if r["agree"]:
            continue
        print(f"\n{r['file']}::{r['test']}[{r['index']}] label={int(r['label'])} ours={int(r['ours'])} "
              f"({r['reason']}) cause={r['cause']}")
        print(f"    gold: {short(r['gold'])}\n    pred: {short(r['pred'])}")
        print(f"    our gold answer: {short(r['gold_answer'])}\n    our pred answer: {short(r['answer'] or '')}")
    keep = ("file", "test", "index", "label", "ours", "reason", "cause")
    return {"wrapping": wrapping, "agree": agree, "total": len(rows),
            "per_file": {k: {"agree": a, "total": t} for k, (a, t) in sorted(per_file.items())},
            "disagreements": [{**{k: r[k] for k in keep}, **{k: short(r[k] or "") for k in
                              ("gold", "pred", "gold_answer", "answer")}} for r in rows if not r["agree"]]}


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkout", help="local checkout of github.com/huggingface/Math-Verify")
    parser.add_argument("--wrapping", choices=("boxed", "raw"), default="boxed")
    parser.add_argument("--json", help="also write the summary and disagreements here")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.checkout, "tests")):
        parser.error(f"checkout {args.checkout!r} has no tests/ folder")
    checkout = os.path.abspath(args.checkout)
    import math_verify  # noqa: F401 - the installed version re-runs the cases to find causes

    print(f"suite: {checkout}/tests (fingerprint {suite_fingerprint(checkout)}), "
          f"math-verify {importlib.metadata.version('math-verify')} installed")
    cases = collect_cases(checkout)
    summary = report(evaluate(cases, args.wrapping), args.wrapping)
    summary["suite_fingerprint"] = suite_fingerprint(checkout)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
