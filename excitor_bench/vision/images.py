"""Decode image files of any common PIL mode into RGB, with errors that name the data set item."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from excitor_bench.errors import UserError

log = logging.getLogger(__name__)

# Transparent pixels are composited over this color, so that they look like the page they sit on.
BACKGROUND = (255, 255, 255)

# Single-channel modes whose values span 0..65535 rather than 0..255. Pillow opens 16-bit grayscale
# PNG files as "I;16", and its own conversion to RGB clips every value above 255 to white.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_image(path: Path, item: str) -> Image.Image:
    """Decode the image at `path` fully and return it as an RGB image of the same size.

    `item` names the image in error messages, e.g. "COCO image 391895". Grayscale, palette,
    CMYK and other modes are converted. Images with an alpha channel or a transparent palette
    entry are composited over white. The EXIF orientation tag is not applied, so the pixels
    come back as stored. Raises UserError when the file is missing or is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{item}: image file {path} not found; check that the image folder is complete "
            "and that the data root in the config points at it"
        )
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # UnidentifiedImageError and truncated files are OSErrors. Some decoders raise
        # ValueError or SyntaxError on corrupt headers.
        raise UserError(
            f"{item}: {path} is not a readable image ({type(error).__name__}: {error}); "
            "replace it with the original file from the data set"
        ) from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image to RGB, compositing any transparency over white."""
    if image.mode in SIXTEEN_BIT_MODES:
        image = sixteen_bit_to_l(image)
    elif image.mode == "La":
        # Pillow converts premultiplied "La" only to "LA".
        image = image.convert("LA")

    bands = image.getbands()
    has_alpha = "A" in bands or "a" in bands or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")

    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """Scale a 16-bit grayscale image to 8 bits (0..65535 to 0..255, rounded) as mode "L"."""
    values = np.asarray(image).astype(np.int64)  # (H, W)
    # NOTE: a 32-bit "I" image is assumed to hold 16-bit values, which is what PNG and PGM
    # files decode to. Values outside 0..65535 are clipped.
    values = np.clip(values, 0, 65535)
    scaled = (values * 255 + 32767) // 65535  # (H, W), round half up
    return Image.fromarray(scaled.astype(np.uint8))  # a 2-D uint8 array becomes mode "L"
