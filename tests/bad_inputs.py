"""A corpus of hostile and odd requests for the deblur endpoint, each with its documented outcome.

Every body is generated here by code (nothing is downloaded); bodies are built lazily, when a test
asks for one. ``CASES`` maps a case name to a ``BadInput``: how to send it (raw bytes with a content
type, or multipart parts) and what the service answers (``Expect``: a 4xx status with a phrase of the
message, or 200 with an image of a given size and mode). ``send`` posts one case with ``requests``.

Documented choices this corpus pins down:
- GIF (animated or not), EPS, PDF, PSD and SVG are not on the decoder allow-list: 415.
- An animated WebP or PNG (APNG) is restored from its first frame: 200, first frame's size.
- A data URL's MIME type is ignored: the bytes decide (a PNG labelled text/html is restored).
- Bytes after the end of an image (polyglots) are ignored and never echoed: the answer is re-encoded.
- Multipart with two files restores the part named ``data`` (then ``body``, then ``file``).
- A PNG whose IHDR is broken (bad CRC, zero width) is not recognised as a PNG at all: 415. Pillow
  does not verify IDAT CRCs, so an image whose only fault is an IDAT CRC decodes (200).
- A JSON body nested too deeply for Python's parser is a 400 like any invalid JSON.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import requests
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PIXEL_CAP = 4096 * 4096  # the handler's default max_pixels (model-config.yaml)
MARKER = b"<script>alert('polyglot')</script>"  # must never come back in an answer


@dataclass(frozen=True)
class Expect:
    """The documented answer: ``status``; for errors a phrase of the message and the error code, for 200 the image."""

    status: int
    words: str = ""
    error: str = ""  # the answer's stable "error" code (handler.request.ERROR_CODES) for a 4xx
    size: tuple[int, int] | None = None  # (width, height) of the answer image
    mode: str | None = None  # Pillow mode of the answer image

    @property
    def is_image(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class Part:
    """One multipart part; ``filename`` None makes it a plain form field."""

    field: str
    data: bytes
    filename: str | None = "upload.png"
    mime: str | None = "image/png"


@dataclass(frozen=True)
class BadInput:
    """One request: a raw body with a content type, or multipart ``parts``; the JSON flag says how
    a 200 answer comes back (JSON requests get a JSON document holding the image)."""

    make: Callable[[], bytes] | None
    content_type: str
    expect: Expect
    parts: Callable[[], list[Part]] | None = None
    json_answer: bool = False
    extra_headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        return b"" if self.make is None else self.make()


# --- image makers ------------------------------------------------------------------------------------


def gradient(width: int, height: int, channels: int = 3) -> np.ndarray:
    """A deterministic (H, W, C) uint8 image with some structure."""
    y, x = np.mgrid[0:height, 0:width]
    planes = [(x * 7 + y * 3 + 40 * c) % 256 for c in range(channels)]
    return np.stack(planes, axis=2).astype(np.uint8)


def save(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png(width: int = 48, height: int = 32) -> bytes:
    return save(Image.fromarray(gradient(width, height)), "PNG")


def jpeg(width: int = 48, height: int = 32) -> bytes:
    return save(Image.fromarray(gradient(width, height)), "JPEG", quality=90)


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def ihdr(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))


def declared_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width``×``height`` gray pixels (data for one row only)."""
    idat = chunk(b"IDAT", zlib.compress(bytes(min(width, 1 << 16) + 1), 9))
    return PNG_SIGNATURE + ihdr(width, height) + idat + chunk(b"IEND", b"")


def zero_width_png() -> bytes:
    return PNG_SIGNATURE + ihdr(0, 16) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def over_cap_png() -> bytes:
    """A complete, valid gray PNG one row over the pixel cap (compresses to ~20 kB)."""
    return save(Image.new("L", (4096, 4097)), "PNG", compress_level=9)


def text_chunk_bomb_png() -> bytes:
    """A 48×32 PNG with a zTXt chunk that inflates to 64 MB (Pillow caps text chunks at 1 MB)."""
    valid = png()
    bomb = chunk(b"zTXt", b"Comment\0\0" + zlib.compress(bytes(64 << 20), 9))
    return valid[:33] + bomb + valid[33:]  # right after IHDR (8-byte signature + 25-byte IHDR)


def bad_crc(valid: bytes, offset: int) -> bytes:
    """``valid`` with the 4 CRC bytes at ``offset`` inverted."""
    flipped = bytes(b ^ 0xFF for b in valid[offset : offset + 4])
    return valid[:offset] + flipped + valid[offset + 4 :]


def png_bad_ihdr_crc() -> bytes:
    return bad_crc(png(), 29)  # signature (8) + length (4) + "IHDR" (4) + 13 bytes of header


def png_bad_idat_crc() -> bytes:
    valid = png()
    end = valid.index(b"IEND") - 4  # the IDAT CRC ends where IEND's length field starts
    return bad_crc(valid, end - 4)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def jpeg_declaring(width: int, height: int) -> bytes:
    """A valid small JPEG with its SOF0 frame size rewritten to ``width``×``height``."""
    data = bytearray(jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def tiff_declaring(width: int, height: int) -> bytes:
    """A minimal little-endian TIFF header declaring ``width``×``height`` 8-bit gray pixels."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    entries += [(273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8 + 16) + bytes(16) + ifd


def bmp_declaring(width: int, height: int) -> bytes:
    """A BMP header (BITMAPINFOHEADER, 24 bit) declaring ``width``×``height`` with 16 bytes of data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 16, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 14 + 40) + info + bytes(16)


def gif_bomb() -> bytes:
    """A GIF whose logical screen is 65535×65535, with a 1×1 frame."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def animated(fmt: str) -> bytes:
    frames = [Image.fromarray(gradient(40, 24)), Image.fromarray(255 - gradient(40, 24))]
    return save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def cmyk_jpeg() -> bytes:
    return save(Image.fromarray(gradient(40, 24)).convert("CMYK"), "JPEG", quality=90)


def gray16_png() -> bytes:
    return save(Image.fromarray((np.arange(40 * 24).reshape(24, 40) * 60).astype(np.uint16)), "PNG")


def palette_with_transparency() -> bytes:
    image = Image.fromarray(gradient(40, 24)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return save(image, "PNG", transparency=0)


def psd_header() -> bytes:
    """Photoshop's file header (8BPS, version 1, 3 channels, 24×40, 8 bit, RGB) and empty sections."""
    return b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 24, 40, 8, 3) + bytes(12)


def eps() -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n"


def pdf() -> bytes:
    return b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def svg() -> bytes:
    return b'<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd"/></svg>'


def png_zip_polyglot() -> bytes:
    """A valid PNG followed by a ZIP-like tail carrying a script (a classic upload polyglot)."""
    return png() + b"PK\x03\x04" + MARKER + bytes(32)


def gif_js_polyglot() -> bytes:
    """GIFAR-style: a GIF header that is also JavaScript."""
    return b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=1;" + MARKER + b"\x3b"


def random_bytes() -> bytes:
    return np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def malformed_exif_jpeg() -> bytes:
    """A JPEG with an APP1 Exif segment whose IFD offset points far outside the segment."""
    data = jpeg()
    tiff = b"MM\0*" + struct.pack(">I", 0x7FFFFFF0)
    app1 = b"Exif\0\0" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def as_json(document: object) -> Callable[[], bytes]:
    return lambda: json.dumps(document).encode()


def json_with(**fields: object) -> Callable[[], bytes]:
    """A JSON body with a valid small image plus ``fields`` (which may override "image")."""
    return lambda: json.dumps({"image": b64(png())} | fields).encode()


def flat_png(width: int, height: int) -> bytes:
    """A one-colour PNG: tiny to send, however many pixels it declares."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


def deeply_nested_json() -> bytes:
    return b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


# --- the corpus ---------------------------------------------------------------------------------------

OCTET = "application/octet-stream"
JSON = "application/json"
TEXT = "text/plain"
UNSUPPORTED = Expect(415, "not a supported image", "unsupported_format")
CORRUPT = Expect(400, "corrupt or truncated image", "unreadable_image")
# TorchServe 0.12 turns a handler 413 into 507, so the handler answers an image over the cap with 422.
TOO_LARGE = Expect(422, "pixel", "image_too_large")
IMAGE_48x32 = Expect(200, size=(48, 32), mode="RGB")


def raw(make: Callable[[], bytes], expect: Expect, content_type: str = OCTET) -> BadInput:
    return BadInput(make, content_type, expect)


def as_json_request(make: Callable[[], bytes], expect: Expect) -> BadInput:
    return BadInput(make, JSON, expect, json_answer=True)


def multipart(parts: Callable[[], list[Part]], expect: Expect) -> BadInput:
    return BadInput(None, "", expect, parts=parts)


CASES: dict[str, BadInput] = {
    # bodies that are no image at all
    "empty body": raw(lambda: b"", Expect(400, "empty body", "empty_image")),
    "random bytes": raw(random_bytes, UNSUPPORTED),
    "eps": raw(eps, UNSUPPORTED),
    "pdf": raw(pdf, UNSUPPORTED),
    "psd": raw(psd_header, UNSUPPORTED),
    "svg text": raw(svg, UNSUPPORTED, "image/svg+xml"),
    "gif/js polyglot": raw(gif_js_polyglot, UNSUPPORTED),
    "invalid utf-8 as text/plain": raw(lambda: b"\xff\xfe\xfd not utf-8", UNSUPPORTED, TEXT),
    # broken images
    "truncated png": raw(lambda: truncated(png()), CORRUPT),
    "truncated jpeg": raw(lambda: truncated(jpeg()), CORRUPT),
    "png with bad IHDR crc": raw(png_bad_ihdr_crc, UNSUPPORTED),
    "png with bad IDAT crc": raw(png_bad_idat_crc, IMAGE_48x32),
    "0×16 png": raw(zero_width_png, UNSUPPORTED),
    "jpeg with malformed exif": raw(malformed_exif_jpeg, IMAGE_48x32),
    # size attacks: refused from the header, before any pixel is decoded
    "png decompression bomb 50000×50000": raw(lambda: declared_png(50_000, 50_000), TOO_LARGE),
    "png one row over the pixel cap": raw(over_cap_png, Expect(422, f"the limit is {PIXEL_CAP}", "image_too_large")),
    "png zTXt bomb": raw(text_chunk_bomb_png, CORRUPT),
    "jpeg declaring 65000×65000": raw(lambda: jpeg_declaring(65_000, 65_000), TOO_LARGE),
    "tiff declaring 100000×100000": raw(lambda: tiff_declaring(100_000, 100_000), TOO_LARGE),
    "bmp declaring 60000×60000": raw(lambda: bmp_declaring(60_000, 60_000), TOO_LARGE),
    "gif bomb 65535×65535": raw(gif_bomb, UNSUPPORTED),
    # odd but valid images: restored, with the documented mode
    "1×1 png": raw(lambda: png(1, 1), Expect(200, size=(1, 1), mode="RGB")),
    "1×300 png": raw(lambda: png(1, 300), Expect(200, size=(1, 300), mode="RGB")),
    "png/zip polyglot": raw(png_zip_polyglot, IMAGE_48x32),
    "animated gif": raw(lambda: animated("GIF"), UNSUPPORTED),
    "animated webp (first frame)": raw(lambda: animated("WEBP"), Expect(200, size=(40, 24), mode="RGB")),
    "animated png (first frame)": raw(lambda: animated("PNG"), Expect(200, size=(40, 24), mode="RGB")),
    "cmyk jpeg": raw(cmyk_jpeg, Expect(200, size=(40, 24), mode="RGB")),
    "16-bit gray png": raw(gray16_png, Expect(200, size=(40, 24), mode="I;16")),
    "palette png with transparency": raw(palette_with_transparency, Expect(200, size=(40, 24), mode="RGBA")),
    # base64 bodies (text/plain reaches the handler as a string)
    "bad base64 text": raw(
        lambda: b"this is *not* base64!", Expect(400, "the body holds text (21 characters)", "not_an_image"), TEXT
    ),
    "base64 of text": raw(lambda: b64(b"hello, world").encode(), UNSUPPORTED, TEXT),
    "base64 png as text": raw(lambda: b64(png()).encode(), IMAGE_48x32, TEXT),
    # JSON documents
    "invalid json": as_json_request(lambda: b'{"image": ', Expect(400, "not valid JSON", "invalid_json")),
    "json array": as_json_request(as_json([1, 2, 3]), Expect(400, "must be an object", "invalid_json")),
    "json null": as_json_request(lambda: b"null", Expect(400, error="invalid_json")),
    "json deeply nested": as_json_request(deeply_nested_json, Expect(400, error="invalid_json")),
    "json image is a number": as_json_request(
        as_json({"image": 12345}), Expect(400, "field 'image' must be", "wrong_type")
    ),
    "json image is a list": as_json_request(
        as_json({"image": ["AAAA"]}), Expect(400, "field 'image' must be", "wrong_type")
    ),
    "json tile_size is a string": as_json_request(
        json_with(tile_size="512"), Expect(400, "field 'tile_size'", "wrong_type")
    ),
    "json tile_size is a float": as_json_request(
        json_with(tile_size=512.0), Expect(400, "field 'tile_size'", "wrong_type")
    ),
    "json self_ensemble is a string": as_json_request(
        json_with(self_ensemble="yes"), Expect(400, "self_ensemble", "wrong_type")
    ),
    "json unknown field": as_json_request(
        json_with(strength=3), Expect(400, "unknown field 'strength'", "unknown_field")
    ),
    "json negative tile_size": as_json_request(
        json_with(tile_size=-512), Expect(400, "field 'tile_size'", "invalid_value")
    ),
    "json huge tile_size": as_json_request(
        json_with(tile_size=10**30), Expect(400, "field 'tile_size'", "invalid_value")
    ),
    "json tile_size under the floor": as_json_request(
        json_with(tile_size=32, overlap=16), Expect(400, "field 'tile_size' must be between 128", "invalid_value")
    ),
    # compute attacks: cheap to send, refused from their estimated cost before any model call
    "flat 2048² at 128-px tiles with self-ensemble": as_json_request(
        lambda: json.dumps(
            {"image": b64(flat_png(2048, 2048)), "tile_size": 128, "overlap": 64, "self_ensemble": True}
        ).encode(),
        Expect(422, "s of compute", "over_budget"),
    ),
    "4,000,000×1 png": raw(lambda: flat_png(4_000_000, 1), Expect(422, "s of compute", "over_budget")),
    "json negative overlap": as_json_request(json_with(overlap=-1), Expect(400, "field 'overlap'", "invalid_value")),
    "json unsupported format": as_json_request(json_with(format="gif"), Expect(400, "field 'format'", "invalid_value")),
    "json missing image": as_json_request(
        as_json({"tile_size": 64}), Expect(400, "field 'image' is required", "missing_field")
    ),
    "json bad base64": as_json_request(as_json({"image": "@@@"}), Expect(400, "not valid base64", "invalid_base64")),
    "json base64 of a pdf": as_json_request(lambda: json.dumps({"image": b64(pdf())}).encode(), UNSUPPORTED),
    "json data-url with wrong mime": as_json_request(
        lambda: json.dumps({"image": "data:text/html;base64," + b64(png())}).encode(),
        Expect(200, size=(48, 32), mode="RGB"),
    ),
    "json data-url png label on pdf bytes": as_json_request(
        lambda: json.dumps({"image": "data:image/png;base64," + b64(pdf())}).encode(), UNSUPPORTED
    ),
    "json ground truth of another size": as_json_request(
        lambda: json.dumps({"image": b64(png(48, 32)), "ground_truth": b64(png(32, 48))}).encode(),
        Expect(400, "field 'ground_truth' is 32×48", "size_mismatch"),
    ),
    "json ground truth not an image": as_json_request(
        lambda: json.dumps({"image": b64(png()), "ground_truth": b64(b"plain text")}).encode(), UNSUPPORTED
    ),
    # multipart forms
    "multipart without a file": multipart(
        lambda: [Part("comment", b"no image here", filename=None, mime=None)],
        Expect(400, "has the field(s) 'comment'", "no_image"),
    ),
    "multipart with two files": multipart(
        lambda: [Part("data", png(48, 32)), Part("file", png(24, 16), "second.png")],
        Expect(200, size=(48, 32), mode="RGB"),
    ),
    "multipart text file as data": multipart(
        lambda: [Part("data", b"notes: bring cake", "notes.txt", "text/plain")],
        Expect(400, "field 'data' holds text (17 characters)", "not_an_image"),
    ),
    "multipart with a pdf": multipart(lambda: [Part("data", pdf(), "doc.pdf", "application/pdf")], UNSUPPORTED),
}


def send(case: BadInput, url: str, headers: dict[str, str], timeout: float) -> requests.Response:
    """POST one case to ``url`` (an inference endpoint) with ``headers`` (the token)."""
    if case.parts is not None:
        files = [(p.field, (p.filename, p.data, p.mime) if p.filename else (None, p.data)) for p in case.parts()]
        return requests.post(url, files=files, headers=headers | case.extra_headers, timeout=timeout)
    headers = headers | {"Content-Type": case.content_type} | case.extra_headers
    return requests.post(url, data=case.body(), headers=headers, timeout=timeout)


def answer_image(case: BadInput, response: requests.Response) -> Image.Image:
    """The image in a 200 answer: the body itself, or the base64 in a JSON answer."""
    if case.json_answer:
        return Image.open(io.BytesIO(base64.b64decode(response.json()["image"])))
    return Image.open(io.BytesIO(response.content))
