"""Leaderboard: lm-eval results JSONs of refusal_ablation runs -> Markdown, CSV, HTML + SVG plots."""

from ._read import Rate, Row, read_all, read_results
from ._write import markdown, plots, sort_rows, write_leaderboard

__all__ = ["Rate", "Row", "markdown", "plots", "read_all", "read_results", "sort_rows", "write_leaderboard"]
