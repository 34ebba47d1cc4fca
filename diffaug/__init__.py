"""Diffusion-based data augmentation for data-scarce image classification: Diff-II, Diff-Mix, DA-Fusion and their baselines, as literate notebooks and a DVC pipeline."""

__version__ = "0.0.1"
