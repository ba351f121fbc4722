"""Data acquisition, decoding, quality checks and splitting for FER-2013."""

from ferbench.data.classes import FER2013_CLASSES, IMAGE_SIZE

__all__ = ["FER2013_CLASSES", "IMAGE_SIZE"]
