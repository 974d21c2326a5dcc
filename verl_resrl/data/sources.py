"""Where each dataset of the ResRL math protocol comes from, and which source columns hold what.

The paper trains on DAPO-Math-17k and reports AIME24, AIME25, AMC23, MATH-500, Minerva and OlympiadBench (following
FlowRL). Each spec names the public Hugging Face dataset downloaded by default and the columns read from it; a
local copy in the same schema (parquet / json / jsonl) can be given instead (``--source NAME=PATH``), and so can
another mirror (``--hf-path NAME=owner/repo``) as long as it uses one of the listed column names.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """One dataset: its download location, its columns, and how rows are written."""

    # Our key: the output file name ``{name}.parquet`` and the ``data_source`` column (the trainer's validation and
    # the eval CLI group metrics by it). verl's default scorer routes "math_dapo" and "aime*" to its DAPO scorer.
    name: str
    # Hugging Face dataset id, config (subset) and split read by ``datasets.load_dataset``.
    hf_path: str
    hf_config: str | None
    hf_split: str
    # Candidate column names, first present wins (mirrors of the same benchmark differ in capitalisation/naming).
    problem_keys: tuple[str, ...] = ("problem", "question", "Problem")
    answer_keys: tuple[str, ...] = ("answer", "Answer", "final_answer")
    id_keys: tuple[str, ...] = ("unique_id", "id", "ID", "idx")
    # Source columns copied (as strings) into ``extra_info`` for slicing results (e.g. MATH-500 level / subject).
    extra_keys: tuple[str, ...] = ()
    # Column holding shared context prepended to the problem when non-empty (OlympiadBench).
    context_key: str | None = None
    # "dapo": the source already holds verl rows with DAPO-templated prompts; "plain": problem/answer columns.
    layout: str = "plain"
    # Drop repeated problems (DAPO-Math-17k's public parquet repeats each of ~17.9k prompts ~100 times).
    deduplicate: bool = False
    # The ``extra_info.split`` written: "train" for the training set, "test" for benchmarks.
    out_split: str = "test"

    def __post_init__(self):
        if self.layout not in ("plain", "dapo"):
            raise ValueError(f"layout must be 'plain' or 'dapo', got {self.layout!r} for {self.name}")


SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        # https://huggingface.co/datasets/BytedTsinghua-SIA/DAPO-Math-17k (data/dapo-math-17k.parquet, 1.79M rows)
        SourceSpec(
            name="math_dapo",
            hf_path="BytedTsinghua-SIA/DAPO-Math-17k",
            hf_config=None,
            hf_split="train",
            layout="dapo",
            deduplicate=True,
            out_split="train",
        ),
        # 500 problems of Lightman et al. 2023 ("Let's Verify Step by Step"); answers are LaTeX strings
        SourceSpec(
            name="math500",
            hf_path="HuggingFaceH4/MATH-500",
            hf_config=None,
            hf_split="test",
            extra_keys=("subject", "level"),
        ),
        # AIME 2024 I + II (30 problems), from AI-MO/aimo-validation-aime
        SourceSpec(name="aime2024", hf_path="HuggingFaceH4/aime_2024", hf_config=None, hf_split="train"),
        # AIME 2025 I + II (30 problems)
        SourceSpec(name="aime2025", hf_path="yentinglin/aime_2025", hf_config=None, hf_split="train"),
        # AMC 2023 (40 problems); answers are stored as floats (27.0) and written as "27"
        SourceSpec(name="amc2023", hf_path="math-ai/amc23", hf_config=None, hf_split="test"),
        # Minerva's OCWCourses set (272 problems, Lewkowycz et al. 2022)
        SourceSpec(name="minerva_math", hf_path="math-ai/minervamath", hf_config=None, hf_split="test"),
        # OlympiadBench (He et al. 2024), English text-only open-ended competition maths (675 problems);
        # final_answer is a list of "$...$" strings
        SourceSpec(
            name="olympiadbench",
            hf_path="Hothan/OlympiadBench",
            hf_config="OE_TO_maths_en_COMP",
            hf_split="train",
            extra_keys=("unit", "answer_type", "subfield"),
            context_key="context",
        ),
    )
}

BENCHMARKS = tuple(name for name, spec in SOURCES.items() if spec.out_split == "test")
