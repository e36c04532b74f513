"""medbench: an adversarial-robustness benchmark for medical image classifiers.

Inputs everywhere are float tensors in [0, 1], NCHW; normalisation lives inside
the model wrapper (bench.models), so every attack sees the same pixel space.
"""

__version__ = "0.1.0"
