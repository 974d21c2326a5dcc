"""Persisted samples of one benchmark: a JSONL file that makes evaluation resumable.

Each line is one verified sample (see :class:`SampleRecord`). Lines are appended and fsynced after every batch, so
after an interruption every sample written so far is reused and only the missing ones are generated. The settings
that change what a sample means (model, sampling, template, benchmark content) are stored next to it in
``{name}.meta.json``; resuming with different settings is refused instead of mixing samples from two setups.
Raising ``n`` on a later run adds samples to the existing ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import defaultdict

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SampleRecord:
    """One generated and verified response."""

    prompt_index: int  # row of the benchmark parquet
    sample_index: int  # 0..n-1 within the prompt
    response: str  # decoded response text (special tokens skipped)
    num_tokens: int  # generated tokens, EOS included when generated
    finish_reason: str  # "stop" (EOS / stop token) or "length" (hit max_new_tokens)
    score: float  # verifier score; correct iff score > 0
    answer: str | None  # final answer the verifier extracted (None: no answer found)
    reason: str  # verifier's reason: correct / wrong / no_answer / timeout / parse_error / crash
    # sum of -log p(sampled token) over the response, when log-probs were requested (mean token entropy estimate)
    neg_log_prob_sum: float | None = None


class SampleStore:
    """Append-only JSONL of :class:`SampleRecord` with a settings file guarding resumption."""

    def __init__(self, directory: str, name: str):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"{name}.jsonl")
        self.meta_path = os.path.join(directory, f"{name}.meta.json")

    def check_settings(self, settings: dict) -> None:
        """Write ``settings`` on first use; on resume refuse when any stored setting differs."""
        if os.path.exists(self.meta_path):
            with open(self.meta_path) as f:
                stored = json.load(f)
            changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
            if changed:
                details = "; ".join(f"{k}: stored {stored.get(k)!r}, now {settings.get(k)!r}" for k in changed)
                raise ValueError(
                    f"{self.path} holds samples generated with other settings ({details}). "
                    "Use another output_dir or delete the samples to start over."
                )
            return
        with open(self.meta_path, "w") as f:
            json.dump(settings, f, indent=1, sort_keys=True)

    def load(self) -> dict[int, list[SampleRecord]]:
        """Samples by prompt index, sorted by sample index; an interrupted final line is dropped (and logged)."""
        by_prompt: dict[int, list[SampleRecord]] = defaultdict(list)
        if not os.path.exists(self.path):
            return {}
        with open(self.path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        good_bytes = 0
        for number, line in enumerate(lines):
            last = number == len(lines) - 1
            if not line.strip():
                good_bytes += len(line) + (0 if last else 1)
                continue
            try:
                record = SampleRecord(**json.loads(line))
            except (json.JSONDecodeError, TypeError) as err:
                if last:  # a write cut short by the interruption: regenerate that sample
                    logger.warning("%s: dropping an incomplete last line (%d bytes)", self.path, len(line))
                    break
                raise ValueError(f"{self.path} line {number + 1} is corrupt: {err}") from err
            if last:  # valid JSON but no newline yet: keep it and terminate it
                with open(self.path, "ab") as f:
                    f.write(b"\n")
            good_bytes += len(line) + 1
            by_prompt[record.prompt_index].append(record)
        if good_bytes < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_bytes)
        for records in by_prompt.values():
            records.sort(key=lambda r: r.sample_index)
            indices = [r.sample_index for r in records]
            if len(set(indices)) != len(indices):
                raise ValueError(f"{self.path}: prompt {records[0].prompt_index} has repeated sample indices")
        return dict(by_prompt)

    def append(self, records: list[SampleRecord]) -> None:
        """Append ``records`` durably (flush + fsync) so that an interruption loses at most the current batch."""
        if not records:
            return
        with open(self.path, "a") as f:
            for record in records:
                f.write(json.dumps(dataclasses.asdict(record)) + "\n")
            f.flush()
            os.fsync(f.fileno())
