"""The one decoder (prepare and inference): every bit depth and colour mode becomes the same 8-bit sample."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ferbench.data.decode import UndecodableImage, decode_fer, decode_rgb
from tests.support import PROJECT_ROOT, textured


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def gray() -> np.ndarray:
    return textured(3, size=64)  # uint8, 64 x 64: decoding also resizes


def test_16_bit_grayscale_is_scaled_not_clipped(gray):
    reference = decode_fer(encoded(Image.fromarray(gray))).pixels
    wide = Image.fromarray(gray.astype(np.uint16) * 257)  # the same picture with 16 bits per pixel
    assert wide.mode.startswith("I")
    decoded = decode_fer(encoded(wide)).pixels
    assert np.abs(decoded.astype(int) - reference).max() <= 1
    assert decoded.mean() == pytest.approx(reference.mean(), abs=0.5)  # clipping would make it near-white
    rgb = decode_rgb(encoded(wide))
    assert rgb.shape == (64, 64, 3) and np.abs(rgb[..., 0].astype(int) - gray).max() <= 1


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "CMYK", "1"])
def test_palette_alpha_cmyk_and_1_bit_match_their_8_bit_twin(gray, mode):
    if mode == "1":
        gray = np.where(gray > 127, 255, 0).astype(np.uint8)  # a 1-bit image's 8-bit twin is black and white
    reference = decode_fer(encoded(Image.fromarray(gray))).pixels
    source = Image.fromarray(gray)
    image = source.convert("RGBA") if mode == "RGBA" else source.convert(mode)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    decoded = decode_fer(encoded(image, fmt)).pixels
    assert decoded.shape == (48, 48)
    assert np.abs(decoded.astype(int) - reference).max() <= 1


def test_multi_frame_images_use_the_first_frame(gray):
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="GIF", save_all=True, append_images=[Image.fromarray(255 - gray)])
    reference = decode_fer(encoded(Image.fromarray(gray).convert("P"), "GIF")).pixels
    np.testing.assert_array_equal(decode_fer(buffer.getvalue()).pixels, reference)


def test_undefined_pixel_scales_are_reported_not_guessed():
    floats = Image.fromarray(np.full((48, 48), 0.5, dtype=np.float32))
    with pytest.raises(UndecodableImage, match="floating-point"):
        decode_fer(encoded(floats, "TIFF"))
    wide = Image.fromarray(np.full((48, 48), 70_000, dtype=np.int32))
    with pytest.raises(UndecodableImage, match="16-bit range"):
        decode_fer(encoded(wide, "TIFF"))


def test_a_photo_is_turned_upright_by_its_exif_orientation():
    photo = np.zeros((40, 80, 3), np.uint8)
    photo[:, :40] = 255  # white on the left when shown as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show"
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", exif=exif)
    upright = decode_rgb(buffer.getvalue())
    assert upright.shape == (80, 40, 3)
    assert upright[:40].mean() > 200 and upright[40:].mean() < 50  # the left half is now on top


WIDE_PHOTO_SIDE = 6300  # 39.7 million 16-bit pixels: under the pixel limit, 79 MB once decoded


def test_a_large_16_bit_photo_decodes_within_a_few_hundred_mb(tmp_path):
    """The 16-bit scaling works a block of rows at a time: the whole decode fits in an address space of
    768 MiB (scaling the image at once needed over 1 GiB)."""
    wide = np.zeros((WIDE_PHOTO_SIDE, WIDE_PHOTO_SIDE), np.uint16)
    wide[::7] = 40_000
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    del wide
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))\n"
        "from ferbench.data.decode import decode_rgb\n"
        "rgb = decode_rgb(open(sys.argv[1], 'rb').read())\n"
        "print(rgb.shape, int(rgb[0, 0, 0]), int(rgb[1, 0, 0]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-1000:]
    assert done.stdout.split() == ["(6300,", "6300,", "3)", "156", "0"]  # 40000 / 257 = 155.6
