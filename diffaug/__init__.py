"""Diffusion data augmentation for data-scarce image classification: Diff-II, Diff-Mix, DA-Fusion and baselines."""

__version__ = "0.0.1"
