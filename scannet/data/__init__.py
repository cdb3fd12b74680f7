"""Datasets: loaders that turn public data files into ASE ``Atoms`` with targets, and train/val/test splits."""
