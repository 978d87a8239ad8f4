"""``python -m handler.cli``: a folder restored through the handler's pipeline, bad files skipped."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handler.cli import main
from tests.conftest import png_bytes, textured_image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    source = tmp_path / "in"
    (source / "nested").mkdir(parents=True)
    (source / "a.png").write_bytes(png_bytes(textured_image(40, 24)))
    rgba = np.dstack([textured_image(20, 30), np.full((30, 20), 77, np.uint8)])
    (source / "nested" / "b.png").write_bytes(png_bytes(rgba))
    (source / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (source / "notes.txt").write_text("not an image suffix: ignored")
    return source


def test_folder_is_restored_and_bad_files_reported(
    folder: Path, tmp_path: Path, identity_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([str(folder), str(out), "--checkpoint", str(identity_checkpoint), "--tile-size", "128"]) == 1
    captured = capsys.readouterr()
    assert "restored 2 image(s), skipped 1" in captured.out
    assert "broken.jpg: not a supported image" in captured.err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.png", "nested", "nested/b.png"]
    # Identity model: the same pixels come back, alpha included, as the handler would answer.
    assert np.array_equal(np.asarray(Image.open(out / "a.png")), textured_image(40, 24))
    assert np.all(np.asarray(Image.open(out / "nested" / "b.png"))[:, :, 3] == 77)


def test_existing_outputs_are_kept_unless_forced(folder: Path, tmp_path: Path, identity_checkpoint: Path) -> None:
    out = tmp_path / "out"
    (out).mkdir()
    (out / "a.webp").write_bytes(b"keep me")
    argv = [str(folder), str(out), "--checkpoint", str(identity_checkpoint), "--format", "webp"]
    main(argv)
    assert (out / "a.webp").read_bytes() == b"keep me"
    main([*argv, "--force"])
    assert Image.open(io.BytesIO((out / "a.webp").read_bytes())).format == "WEBP"


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--tile-size", "8"], "option 'tile_size' must be between"), (["--checkpoint", "nope.pt"], "not found")],
)
def test_bad_options_are_readable(
    folder: Path, tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(folder), str(tmp_path / "out"), *extra]) == 1
    assert message in capsys.readouterr().err
