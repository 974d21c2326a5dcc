"""The agent eval's options and tasks: the config file, the command line and the task files, checked before
anything heavy is imported; every input error is an ``InputError`` naming the key, file or row."""

from __future__ import annotations

import dataclasses
import difflib
import os

from omegaconf import DictConfig, OmegaConf

# the eval CLIs share verl_resrl/eval/config
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config")
CONFIG_NAME = "eval_agents"
REQUIRED = ("model_path", "tasks", "output_dir")
OPEN_DICTS = ("chat_template_kwargs", "vllm.engine_kwargs")  # free-form: any key may be added
EXIT_INPUT = 2  # bad input: nothing was played


class InputError(ValueError):
    """The user's input is wrong (a file, an option, a row): reported as one line naming it, exit 2."""


# ------------------------------------------------------------------------------------------------------- the tasks
@dataclasses.dataclass(frozen=True)
class Task:
    """One row of an agent parquet file."""

    file: str
    index: int  # row number in its file
    task_id: str
    data_source: str
    row: dict  # what the loop's run() receives (verl's non-tensor batch fields)


def load_tasks(path: str, max_tasks: int | None) -> list[Task]:
    """The rows of an agent-task file (``python -m verl_resrl.data --only twx_twc_tiny sciworld``), task ids checked
    by their adapters; InputError naming the file, the row and the key otherwise."""
    import pandas as pd

    from verl_resrl.agents import AGENT_LOOP
    from verl_resrl.agents.env_adapter import check_task_id
    from verl_resrl.data.convert import to_python

    if not os.path.isfile(path):
        raise InputError(f"tasks: file not found: {path} (python -m verl_resrl.data --out-dir DIR --only "
                         "twx_twc_tiny sciworld writes agent-task files)")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise InputError(f"tasks: {path} is not a readable parquet file ({type(exc).__name__})") from None
    missing = [c for c in ("prompt", "extra_info", "agent_name") if c not in frame.columns]
    if missing or not len(frame) or set(frame["agent_name"]) != {AGENT_LOOP}:
        why = (f"missing column(s) {missing}" if missing else "no rows" if not len(frame)
               else f"agent_name is {sorted(map(str, set(frame['agent_name'])))}")
        raise InputError(f"tasks: {path} is not an agent-task file ({why}; its rows need agent_name "
                         f"{AGENT_LOOP!r} and extra_info.task_id: python -m verl_resrl.data --only twx_twc_tiny "
                         "sciworld)")
    tasks = []
    for i, record in enumerate(frame.head(max_tasks).to_dict("records") if max_tasks else frame.to_dict("records")):
        row = {k: to_python(v) for k, v in record.items()}
        row["raw_prompt"] = row.pop("prompt")
        row.setdefault("index", i)
        info = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
        try:  # the loop reads the same key (agent_loop.read_task_id) and checks it the same way
            task_id = check_task_id(info.get("task_id"))
        except ValueError as exc:
            raise InputError(f"tasks: {path} row {i}: extra_info.task_id: {exc}") from None
        tasks.append(Task(path, i, task_id, str(row.get("data_source", os.path.basename(path))), row))
    return tasks


# ------------------------------------------------------------------------------------------------------ the options
def check_config(cfg: DictConfig) -> list[str]:
    """The options the run relies on, checked before anything is loaded (no verl import); the task files."""
    for key in REQUIRED:
        if OmegaConf.is_missing(cfg, key):
            raise InputError(f"{key} is required ({key}=...; see docs/evaluation.md, 'Agent tasks')")
    if not os.path.isdir(str(cfg.model_path)):
        raise InputError(f"model_path: not a folder: {cfg.model_path} (an HF model folder or a verl checkpoint "
                         ".../global_step_N/actor)")
    files = [cfg.tasks] if isinstance(cfg.tasks, str) else list(cfg.tasks)
    if not files:
        raise InputError("tasks is empty: give one or more agent-task parquet files")
    for key, minimum in (("episodes", 1), ("concurrency", 1), ("prompt_length", 1), ("response_length", 1)):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise InputError(f"{key} must be an integer >= {minimum}, got {value!r}")
    if cfg.max_tasks is not None and (not isinstance(cfg.max_tasks, int) or cfg.max_tasks < 1):
        raise InputError(f"max_tasks must be null or an integer >= 1, got {cfg.max_tasks!r}")
    if cfg.ks is not None and any(not isinstance(k, int) or not 1 <= k <= cfg.episodes for k in cfg.ks):
        raise InputError(f"ks must be integers in [1, episodes={cfg.episodes}], got {list(cfg.ks)}")
    if cfg.backend not in ("auto", "hf", "vllm"):
        raise InputError(f"backend must be 'auto', 'hf' or 'vllm', got {cfg.backend!r}")
    return files


def check_options(cfg: DictConfig):
    """The loop's own ``AgentOptions`` from ``resrl_agent``, checked by the loop's parser (imports verl)."""
    from verl_resrl.agents.agent_loop import OPTIONS_KEY, parse_options

    try:
        return parse_options(OmegaConf.to_container(cfg.resrl_agent, resolve=True))
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc) if OPTIONS_KEY in str(exc) else f"{OPTIONS_KEY}: {exc}") from None


def unknown_override(argv: list[str], cfg: DictConfig) -> str | None:
    """The error line for a command-line ``KEY=VALUE`` naming no option (with the closest names), or a missing
    required option; None when the command line is fine. Checked before Hydra, whose message is a stack of lines."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # noqa: BLE001 - Hydra's grammar error, shortened to its first line
        return f"cannot read the command line: {str(exc).splitlines()[0]}"
    known = [k for k in _leaf_keys(OmegaConf.to_container(cfg, resolve=False)) if not k.startswith("hydra")]
    given = set()
    for o in parsed:
        key = o.key_or_group
        given.add(key)
        if key.startswith("hydra.") or key == "hydra":
            continue
        if any(key == d or key.startswith(d + ".") for d in OPEN_DICTS):
            continue
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            return f"unknown option {key!r}{hint}; options: verl_resrl/eval/config/eval_agents.yaml"
    for key in REQUIRED:
        if key not in given and OmegaConf.is_missing(cfg, key):
            return f"{key} is required ({', '.join(f'{k}=...' for k in REQUIRED)}; see docs/evaluation.md)"
    return None


def _leaf_keys(node, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        keys = [prefix[:-1]] if prefix else []
        for k, v in node.items():
            keys += _leaf_keys(v, f"{prefix}{k}.")
        return keys
    return [prefix[:-1]]


def default_config(**overrides) -> DictConfig:
    """The config file's defaults with ``overrides`` (dotted keys allowed) merged: the Python entry point."""
    cfg = OmegaConf.load(os.path.join(CONFIG_DIR, f"{CONFIG_NAME}.yaml"))
    cfg.pop("hydra")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg
