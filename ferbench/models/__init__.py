"""Backbones, heads, preprocessing and checkpoints."""
