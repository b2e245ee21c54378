"""Data: sources, splits, preprocessing and augmentation (numpy only)."""
