"""The corruption track: MedMNIST-C's common corruptions (Di Salvo et al. 2024) as a threat model.

- :mod:`~bench.corruptions.catalog`: which corruptions a dataset has, and how each is applied at each size;
- :mod:`~bench.corruptions.generate`: deterministic, cached, checksummed corrupted test sets;
- :mod:`~bench.corruptions.metrics`: balanced error (with bootstrap resamples);
- :mod:`~bench.corruptions.track`: one evaluation (``scripts/corrupt.py``), its rows in
  ``<flag>_<size>_corruptions.csv`` (schema in :mod:`bench.leaderboard.corruption`).
"""
