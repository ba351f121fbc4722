"""Data acquisition, decoding, quality checks and splitting for FER-2013 (the label set and image size
live in `ferbench.constants`)."""
