"""Turning any image into a FER-2013 sample: 48x48 uint8 grayscale.

This is the one definition of "a face as the model sees it": `prepare` uses it on the dataset
and inference uses it on face crops, so training and serving see identical pixels.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from ferbench.constants import IMAGE_SIZE

T = TypeVar("T")


class UndecodableImage(ValueError):
    """The bytes are empty, not an image, or a truncated/corrupt image."""


class ImageTooLarge(UndecodableImage):
    """The image is over a size limit (bytes or pixels): refused before it is decoded."""


@dataclass(frozen=True)
class FerPixels:
    """A decoded sample and what had to be done to it."""

    pixels: np.ndarray  # uint8, IMAGE_SIZE x IMAGE_SIZE
    converted: bool  # the source was not 8-bit grayscale
    resized: bool  # the source was not IMAGE_SIZE x IMAGE_SIZE


WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit grayscale (Pillow opens some as 32-bit "I")


ROWS_PER_BLOCK = 256  # wide pixels are scaled a block of rows at a time: memory stays near the 8-bit result's


def to_8bit(image: Image.Image) -> Image.Image:
    """The image with 8 bits per channel: 16-bit grayscale scaled (value / 257, so 65535 -> 255), not
    clipped as Pillow's own conversion does (which turns a 16-bit face near-white); palette, 1-bit,
    alpha and CMYK images are left to Pillow's exact conversions."""
    if image.mode not in WIDE_GRAY_MODES:
        if image.mode == "F":
            raise UndecodableImage("32-bit floating-point pixels (no defined 8-bit scale); save it as 8 or 16 bit")
        return image
    image.load()
    width, height = image.size
    scaled = np.empty((height, width), np.uint8)
    for top in range(0, height, ROWS_PER_BLOCK):
        block = np.asarray(image.crop((0, top, width, min(height, top + ROWS_PER_BLOCK)))).astype(np.int64)
        if block.size and (block.min() < 0 or block.max() > 65535):
            raise UndecodableImage(f"{image.mode} pixels outside the 16-bit range 0..65535; save it as 8 or 16 bit")
        scaled[top : top + len(block)] = (block + 128) // 257  # == rint(value / 257): 257 is odd, so no ties
    return Image.fromarray(scaled)


EXIF_ORIENTATION = 0x0112
ORIENTATION_TRANSPOSES = {  # EXIF orientation -> the transpose that shows the photo upright (as ImageOps does)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def image_to_fer(image: Image.Image) -> FerPixels:
    """Convert a PIL image to 48x48 grayscale (ITU-R 601 luma, bilinear with antialiasing)."""
    image.load()
    converted = image.mode != "L"
    image = to_8bit(image)
    if image.mode != "L":
        image = image.convert("L")
    resized = image.size != (IMAGE_SIZE, IMAGE_SIZE)
    if resized:
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return FerPixels(np.asarray(image, dtype=np.uint8).copy(), converted, resized)


def decode_fer(data: bytes | None) -> FerPixels:
    """Decode image bytes into a FER sample; raise UndecodableImage with the reason."""
    return _decode(data, image_to_fer)


MIN_PHOTO_SIDE = 16  # a 48x48 face needs at least this much image around it to be found
MAX_PHOTO_ASPECT = 20  # a strip of pixels is no photo; detectors fail on such shapes in their own ways
DEFAULT_PHOTO_PIXELS = 40_000_000  # a 40-megapixel photo decodes to 120 MB of RGB
PHOTO_PIXELS_LIMIT = 250_000_000  # the most a user may raise it to: 750 MB of RGB


def shape_problem(width: int, height: int, what: str = "photo") -> str | None:
    """Why a `what` (a photo, a video's frames) of this size cannot hold faces to find, or None."""
    short, long = sorted((width, height))
    if short < MIN_PHOTO_SIDE or long > MAX_PHOTO_ASPECT * short:
        return (
            f"not a {what} of faces ({width}x{height} pixels: at least {MIN_PHOTO_SIDE} px a side and "
            f"at most {MAX_PHOTO_ASPECT}:1)"
        )
    return None


def decode_rgb(data: bytes | None, max_pixels: int = DEFAULT_PHOTO_PIXELS) -> np.ndarray:
    """Decode a photo (any size, EXIF orientation applied) to uint8 RGB H x W x 3, for face detection."""

    def to_rgb(image: Image.Image) -> np.ndarray:
        if image.width * image.height > max_pixels:
            raise ImageTooLarge(f"too large ({image.width}x{image.height} pixels; the limit is {max_pixels:,})")
        problem = shape_problem(image.width, image.height)
        if problem:
            raise UndecodableImage(problem)
        orientation = image.getexif().get(EXIF_ORIENTATION)
        rgb = to_8bit(image).convert("RGB")  # scaled before turning: one full-size wide copy at most
        if orientation in ORIENTATION_TRANSPOSES:
            rgb = rgb.transpose(ORIENTATION_TRANSPOSES[orientation])
        return np.asarray(rgb, dtype=np.uint8).copy()

    return _decode(data, to_rgb)


def _decode(data: bytes | None, convert: Callable[[Image.Image], T]) -> T:
    if not data:
        raise UndecodableImage("empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only: `convert` may check the size first
            return convert(image)
    except UndecodableImage:
        raise
    except UnidentifiedImageError as exc:
        raise UndecodableImage("not an image") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UndecodableImage(f"corrupt image ({exc})") from exc
