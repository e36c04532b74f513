"""medbench's sweep launchers, where Hydra looks for plugins (``hydra_plugins``); the code is ``bench/sweep/``."""
