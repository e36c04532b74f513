"""Sweeps: launchers that survive a real cluster, and each job's own account of how it ended."""
