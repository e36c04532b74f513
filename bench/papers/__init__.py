"""Paper reproductions: each paper declares its experiment, datasets and published numbers; a table is built from
the leaderboard rows its runs wrote (scripts/paper.py runs them and writes results/paper/<paper>.csv)."""

from bench.papers.base import PAPERS, Paper, build_table

__all__ = ["PAPERS", "Paper", "build_table"]

import bench.papers.finlayson2018  # noqa: E402,F401  (registers the papers)
import bench.papers.medmnist_baselines  # noqa: E402,F401
import bench.papers.underspecification  # noqa: E402,F401
import bench.papers.zoo  # noqa: E402,F401
