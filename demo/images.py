"""Opening images in the demo with Pillow alone (the demo imports no torch, so not ``deblur.imageio``).

The same rules and sentences as the server's decoder: allow-listed formats only (never EPS/PDF), the
pixel cap checked from the header before any pixel is decoded, Pillow's bomb guard kept on.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

from PIL import Image, UnidentifiedImageError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
MAX_PIXELS = 4096 * 4096  # the archive's default pixel cap: a larger upload would be refused by the server


class ImageError(ValueError):
    """An image that cannot be opened; the message is meant for the person who uploaded it."""


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode ``data`` with the allow-listed decoders, enforcing the pixel cap."""
    if not data:
        raise ImageError("empty body: send the image bytes (PNG, JPEG, WebP, BMP or TIFF)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageError(f"image has no pixels ({width}×{height})")
            if width * height > max_pixels:
                raise ImageError(f"image is {width}×{height} = {width * height} pixels; the limit is {max_pixels}")
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError("not a supported image: send PNG, JPEG, WebP, BMP or TIFF bytes") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image exceeds the pixel limit: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error) as exc:
        raise ImageError(f"corrupt or truncated image: {exc}") from exc
    return image
