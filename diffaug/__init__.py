"""Diffusion-based data augmentation for data-scarce image classification: Diff-II, Diff-Mix, DA-Fusion and their baselines, as literate notebooks and a DVC pipeline.

Modules:

- `diffaug.data`: Datasets, the split file every stage reads (few-shot, long-tail, full), a procedurally drawn toy dataset, the synthetic-set format, importers for six public datasets, and the `prepare` stage."""

__version__ = "0.0.1"
