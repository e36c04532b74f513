"""The ``medbench`` command: one subcommand per job, each a module of this package.

    medbench attack experiment=quickstart
    medbench train dataset=pneumoniamnist model=resnet18_28 train.epochs=100
    medbench leaderboard
    medbench --help

The files in scripts/ are thin entry points over the same modules (``python scripts/attack.py ...`` and
``medbench attack ...`` are the same program), so the source checkout and an installed wheel behave alike.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Subcommand:
    module: str  # bench.cli.<module>, whose main() reads sys.argv
    summary: str


COMMANDS: dict[str, Subcommand] = {
    "attack": Subcommand("attack", "run an experiment: dataset x model (x defense) x attack or battery (Hydra)"),
    "train": Subcommand("train", "train one classifier (or a trained defense) into the model zoo (Hydra)"),
    "certify": Subcommand("certify", "randomised smoothing's certified L2 track (Hydra)"),
    "corrupt": Subcommand("corrupt", "the MedMNIST-C corruption track (Hydra)"),
    "submit": Subcommand("submit", "check and evaluate a defense submission folder"),
    "promote": Subcommand("promote", "copy admitted local evaluations into results/leaderboard/"),
    "leaderboard": Subcommand("leaderboard", "render results/README.md, leaderboard.html and figures"),
    "paper": Subcommand("paper", "reproduce a paper's experiment and write results/paper/<paper>.csv"),
    "baselines": Subcommand("baselines", "add the zoo's clean test metrics to results/baselines/"),
    "sweep-status": Subcommand("sweep_status", "what happened to every job of a sweep"),
    "merge-records": Subcommand("merge_records", "combine shard record sets written in separate folders"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: medbench <command> [arguments]   (medbench <command> --help for its own)", "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "Files go under $MEDBENCH_HOME, else the source checkout, else the current directory:",
              "models/ (the zoo), outputs/ (runs, records, the local leaderboard), results/ (the tracked one)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)} (medbench --help).",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.cli.{COMMANDS[name].module}")
    sys.argv = [f"medbench {name}", *rest]  # Hydra and argparse read sys.argv
    result = module.main()
    return result if isinstance(result, int) else 0
