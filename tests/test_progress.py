"""Progress bars: a bar with rate and ETA on a terminal, nothing drawn when output is piped."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from tests.conftest import REPO


def attack_command(checkpoint, tmp_path) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "attack.py"), f"checkpoint={checkpoint}", "attack=fgsm",
            "dataset.n_examples=32", "eval.batch_size=8", "logger=none", f"paths.output_root={tmp_path}",
            f"paths.leaderboard_dir={tmp_path / 'lb'}"]


@pytest.mark.slow
def test_attack_bar_on_a_terminal_shows_images_rate_and_eta(trained_breast, real_root, tmp_path):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a real terminal has a size
    env = {**os.environ, "MEDMNIST_ROOT": str(real_root)}
    proc = subprocess.Popen(attack_command(trained_breast[2], tmp_path), stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=600) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "attacks on breastmnist_28" in text
    assert "img/s" in text and "<" in text, text  # tqdm's rate and elapsed<remaining
    assert "32/32" in text, text  # the finished bar stays on screen with its final rate


@pytest.mark.slow
def test_attack_progress_is_quiet_when_piped(trained_breast, real_root, tmp_path):
    env = {**os.environ, "MEDMNIST_ROOT": str(real_root)}
    proc = subprocess.run(attack_command(trained_breast[2], tmp_path), capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "img/s" not in proc.stdout + proc.stderr and "\r" not in proc.stderr


def test_a_sweep_declared_in_an_experiment_file_counts_its_jobs_and_the_command_line_wins_per_key():
    from bench.progress import count_sweep_jobs

    experiment_sweep = {"attack": "a,b,c,d,e"}  # conf/experiment/finlayson2018.yaml's hydra.sweeper.params
    assert count_sweep_jobs(["dataset=pneumoniamnist"], experiment_sweep) == 5
    assert count_sweep_jobs(["seed=0,1"], experiment_sweep) == 10
    assert count_sweep_jobs(["attack=a"], experiment_sweep) == 1
