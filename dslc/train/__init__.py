"""Training shared by every backend: the loop, targets, outputs, progress, resume."""
