"""Decoding with limits and typed errors; encoding puts alpha, gray and bit depth back."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from conftest import png_bytes, textured_image
from PIL import Image

from deblur.imageio import (
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
    decode_image,
    deflate,
    encode_image,
    encode_png,
    to_image,
)


def encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_rgb_png_round_trips_exactly() -> None:
    array = textured_image(40, 30)
    decoded = decode_image(png_bytes(array))
    assert decoded.size == (40, 30) and decoded.pixels.shape == (3, 30, 40)
    assert decoded.pixels.min() >= -1 and decoded.pixels.max() <= 1
    back = Image.open(io.BytesIO(encode_image(to_image(decoded.pixels, decoded))))
    assert back.format == "PNG" and np.array_equal(np.asarray(back), array)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "TIFF"])
def test_allowed_formats_decode(fmt: str) -> None:
    decoded = decode_image(encoded(Image.fromarray(textured_image(33, 21)), fmt))
    assert decoded.size == (33, 21) and decoded.source_format == fmt


@pytest.mark.parametrize(
    "data",
    [
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
        b"%PDF-1.4\n1 0 obj<<>>endobj\n",
        b"GIF89a" + b"\0" * 20,
        b"hello, not an image",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    ],
    ids=["eps", "pdf", "gif", "text", "svg"],
)
def test_other_formats_are_refused(data: bytes) -> None:
    with pytest.raises(UnsupportedImageError, match="not a supported image") as info:
        decode_image(data)
    assert info.value.status == 415


def test_empty_and_truncated_bodies_are_bad_requests() -> None:
    with pytest.raises(ImageError, match="empty") as info:
        decode_image(b"")
    assert info.value.status == 400
    data = encoded(Image.fromarray(textured_image(64, 64)), "PNG")
    with pytest.raises(ImageError, match="corrupt or truncated") as info:
        decode_image(data[: len(data) // 2])
    assert info.value.status == 400


def test_pixel_cap_is_checked_before_decoding() -> None:
    data = png_bytes(textured_image(50, 40))
    with pytest.raises(ImageTooLargeError, match="2000 pixels; the limit is 1999") as info:
        decode_image(data, max_pixels=1999)
    assert info.value.status == 413
    assert decode_image(data, max_pixels=2000).size == (50, 40)


def test_a_header_past_pillows_own_guard_names_our_limit() -> None:
    """A PNG header claiming 20000×10000 pixels trips Pillow's bomb guard before our size check: the message
    must still quote the archive's cap, not Pillow's 178,956,970."""
    real = png_bytes(textured_image(2, 2))  # signature, IHDR (length, type, 13 bytes, CRC), IDAT, IEND
    ihdr = (20000).to_bytes(4, "big") + (10000).to_bytes(4, "big") + real[24:29]
    png = real[:16] + ihdr + zlib.crc32(b"IHDR" + ihdr).to_bytes(4, "big") + real[33:]
    with pytest.raises(ImageTooLargeError, match="more than 16777216 pixels") as info:
        decode_image(png, max_pixels=4096 * 4096)
    assert "178956970" not in str(info.value) and info.value.status == 413


def test_exif_orientation_is_applied() -> None:
    image = Image.fromarray(textured_image(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    decoded = decode_image(encoded(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 40)


def test_alpha_is_kept_bit_exact_and_gray_stays_gray() -> None:
    rgba = np.dstack([textured_image(24, 16), np.arange(24 * 16, dtype=np.uint8).reshape(16, 24)])
    decoded = decode_image(png_bytes(rgba))
    out = Image.open(io.BytesIO(encode_image(to_image(decoded.pixels, decoded))))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])

    gray = decode_image(encoded(Image.fromarray(textured_image(24, 16)[..., 0]), "PNG"))
    assert gray.grayscale and to_image(gray.pixels, gray).mode == "L"


def test_sixteen_bit_gray_stays_sixteen_bit() -> None:
    values = (np.arange(32 * 8, dtype=np.uint16).reshape(8, 32) * 251).astype(np.uint16)
    decoded = decode_image(encoded(Image.fromarray(values), "PNG"))
    assert decoded.bit_depth == 16
    out = Image.open(io.BytesIO(encode_image(to_image(decoded.pixels, decoded))))
    assert np.abs(np.asarray(out).astype(np.int64) - values).max() <= 1


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_writer_round_trips_every_layout_exactly(channels: int) -> None:
    rng = np.random.default_rng(channels)
    array = rng.integers(0, 256, (13, 17, channels), dtype=np.uint8)  # noise: every Up difference wraps somewhere
    back = np.asarray(Image.open(io.BytesIO(encode_png(array))))
    assert np.array_equal(back.reshape(array.shape), array)


@pytest.mark.parametrize(("size", "threads"), [(0, 2), (1000, 1), (5000, 2), (5001, 3), (40000, 7)])
def test_parallel_deflate_is_one_valid_zlib_stream(monkeypatch: pytest.MonkeyPatch, size: int, threads: int) -> None:
    monkeypatch.setattr("deblur.imageio.PARALLEL_DEFLATE_MIN_BYTES", 1000)
    data = np.random.default_rng(size).integers(0, 8, size, dtype=np.uint8)  # compressible, not trivially
    compressed = deflate(data, threads=threads)
    assert zlib.decompress(compressed) == data.tobytes()  # zlib checks the header and the Adler-32


def test_png_writer_keeps_sixteen_bits() -> None:
    gray = np.random.default_rng(0).integers(0, 65536, (9, 11, 1), dtype=np.uint16)
    with Image.open(io.BytesIO(encode_png(gray))) as image:
        assert image.mode in ("I;16", "I") and np.array_equal(np.asarray(image), gray[:, :, 0])
    rgb = np.random.default_rng(1).integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    data = encode_png(rgb)
    assert data[24] == 16  # IHDR bit depth; Pillow reads 16-bit colour back at 8 bits only
    with Image.open(io.BytesIO(data)) as image:
        assert np.abs(np.asarray(image).astype(np.int64) - rgb // 256).max() <= 1


def test_cmyk_and_palette_are_converted() -> None:
    rgb = Image.fromarray(textured_image(20, 20))
    assert decode_image(encoded(rgb.convert("CMYK"), "JPEG")).pixels.shape == (3, 20, 20)
    assert decode_image(encoded(rgb.convert("P"), "PNG")).pixels.shape == (3, 20, 20)


def test_output_formats_and_no_metadata_echo() -> None:
    decoded = decode_image(encoded(Image.fromarray(textured_image(20, 20)), "JPEG", exif=b"Exif\0\0II*\0"))
    image = to_image(decoded.pixels, decoded)
    for fmt, pil in (("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")):
        out = Image.open(io.BytesIO(encode_image(image, fmt)))
        assert out.format == pil and "exif" not in out.info and "icc_profile" not in out.info
    with pytest.raises(ImageError, match="unsupported output format"):
        encode_image(image, "gif")
