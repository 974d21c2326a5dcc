"""Data preparation: DAPO-Math-17k (deduplicated) and the math benchmarks into verl's parquet schema.

``python -m verl_resrl.data --out-dir DIR`` downloads and converts everything; see docs/evaluation.md.
"""
