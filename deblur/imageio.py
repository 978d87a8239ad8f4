"""Decode request bytes into model tensors and encode results back, with limits.

Every failure raises an ``ImageError`` subclass carrying an HTTP status and a message meant for
the person who sent the image. Decoders are allow-listed (never EPS/PDF) and the pixel cap is
checked from the header before any pixel is decoded; Pillow's own bomb guard stays on.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
DEFAULT_MAX_PIXELS = 4096 * 4096


class ImageError(ValueError):
    """A request image that cannot be processed; ``status`` is the HTTP code to answer with."""

    status = 400


class UnsupportedImageError(ImageError):
    status = 415


class ImageTooLargeError(ImageError):
    status = 413


@dataclass(frozen=True)
class DecodedImage:
    """An upright image split into what the model sees and what is put back afterwards."""

    pixels: torch.Tensor  # (3, H, W) float32 in [-1, 1]
    alpha: np.ndarray | None  # (H, W) alpha channel, returned unchanged
    grayscale: bool
    bit_depth: int  # 8 or 16
    source_format: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.pixels.shape[2], self.pixels.shape[1]


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
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
                raise ImageTooLargeError(
                    f"image is {width}×{height} = {width * height} pixels; the limit is {max_pixels}"
                )
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise UnsupportedImageError("not a supported image: send PNG, JPEG, WebP, BMP or TIFF bytes") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image exceeds the pixel limit: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise ImageError(f"corrupt or truncated image: {exc}") from exc
    return image


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Bytes → upright image as a (3, H, W) tensor in [-1, 1], with alpha/gray/depth set aside."""
    image = open_image(data, max_pixels)
    source_format = image.format or "PNG"
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError) as exc:  # malformed EXIF must not crash the request
        raise ImageError(f"corrupt EXIF data: {exc}") from exc
    alpha = None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image).astype(np.float32)
        pixels = torch.from_numpy(np.clip(array, 0, 65535) / 32767.5 - 1.0).expand(3, -1, -1)
        return DecodedImage(pixels.contiguous(), None, True, 16, source_format)
    grayscale = image.mode in ("1", "L", "LA")
    if "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        alpha = np.asarray(image)[:, :, 3].copy()
    rgb = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8; CMYK/YCbCr/palette converted here
    return DecodedImage(to_model_range(rgb), alpha, grayscale, 8, source_format)


def to_model_range(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) float32 in [-1, 1]."""
    # np.array copies: PIL-backed arrays are read-only, which torch.from_numpy warns about.
    return torch.from_numpy(np.array(rgb, dtype=np.uint8, order="C")).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [-1, 1] → (H, W, 3) uint8, clamped and rounded."""
    scaled = pixels.detach().float().clamp(-1, 1).add(1).mul_(127.5).round_()
    return scaled.to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def to_image(pixels: torch.Tensor, decoded: DecodedImage) -> Image.Image:
    """Model output → PIL image with the input's alpha, gray mode and bit depth put back."""
    if decoded.bit_depth == 16:
        gray = pixels.detach().float().clamp(-1, 1).mean(dim=0).add(1).mul(32767.5).round()
        return Image.fromarray(gray.to(torch.int32).cpu().numpy().astype(np.uint16))  # mode I;16
    image = Image.fromarray(to_uint8(pixels))
    if decoded.grayscale:
        image = image.convert("L")
    if decoded.alpha is not None:
        image.putalpha(Image.fromarray(decoded.alpha))
    return image


def encode_image(image: Image.Image, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode without echoing metadata (no EXIF/ICC); fast PNG settings."""
    pil_format = OUTPUT_FORMATS.get(fmt.lower())
    if pil_format is None:
        raise ImageError(f"unsupported output format {fmt!r}: use one of png, jpeg, webp")
    if pil_format == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # JPEG has no alpha and no 16-bit
    if pil_format == "WEBP" and image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    if pil_format == "PNG":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format=pil_format, quality=quality)
    return buffer.getvalue()
