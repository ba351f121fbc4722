"""The FER-2013 label set and image size, in the order every file of the project uses."""

FER2013_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
IMAGE_SIZE = 48
SPLIT_FOLDERS: tuple[str, ...] = ("train", "test")
