"""ferbench: a reproducible benchmark of pretrained backbones for facial emotion recognition."""

__version__ = "0.1.0"
