"""The ground floor: the FER-2013 label set and image size, in the order every file of the project uses.

It imports nothing, so the data, model, serving and pipeline modules can all build on it without
depending on one another.
"""

FER2013_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
IMAGE_SIZE = 48
