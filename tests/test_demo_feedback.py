"""Feedback from the demo: Good/Bad stored in SQLite with everything needed to retrain, and the Bad export.

Results to rate come from the demo logic against the stub TorchServe of ``test_demo`` (JSON contract).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from test_demo import StubBackend, blurred_pair, running_stub, save, stub_restore

from demo.app import FeedbackDraft, deblur_images, record_feedback
from demo.backend import RestoreSettings
from demo.feedback import FeedbackCase, FeedbackStore, main


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubBackend]:
    with running_stub(tmp_path) as backend:
        yield backend


@pytest.fixture
def store(tmp_path: Path) -> FeedbackStore:
    return FeedbackStore(tmp_path / "data" / "feedback.sqlite3")


def rated_result(
    stub: StubBackend, tmp_path: Path, name: str, with_truth: bool, rotated: bool = False
) -> FeedbackDraft:
    """Deblur a small JPEG through the stub (EXIF "rotate 90°" if ``rotated``); returns what a Good/Bad refers to."""
    blurred, sharp = blurred_pair(96, 64)
    exif = Image.Exif()
    if rotated:
        exif[0x0112] = 6
    path = save(tmp_path / f"{name}.jpg", blurred, format="JPEG", quality=95, exif=exif.tobytes())
    truth = save(tmp_path / f"{name}_gt.png", sharp) if with_truth else None
    return deblur_images(stub.client, path, truth, RestoreSettings("2.0", 256, 32, True)).draft


def test_a_verdict_stores_input_output_version_settings_and_comment(
    stub: StubBackend, store: FeedbackStore, tmp_path: Path
) -> None:
    """Stub backend: Bad with a comment keeps the uploaded bytes, the restored PNG, the version and the settings."""
    draft = rated_result(stub, tmp_path, "street", with_truth=True)

    message = record_feedback(store, draft, "down", "  still smeared  ")

    [stored] = store.cases()
    case = stored.case
    assert f"#{stored.id}" in message and "rated bad" in message
    assert case.input == (tmp_path / "street.jpg").read_bytes()
    assert case.output == Path(draft.output_path).read_bytes()
    assert case.ground_truth == (tmp_path / "street_gt.png").read_bytes()
    assert (case.verdict, case.comment, case.model_version, case.input_name) == (
        "down",
        "still smeared",
        "2.0",
        "street.jpg",
    )
    assert case.settings == {
        "version": "2.0",
        "tile_size": 256,
        "overlap": 32,
        "self_ensemble": True,
        "path": "default",
    }


def test_feedback_before_any_result_is_a_readable_error(store: FeedbackStore) -> None:
    """No result on the page yet: the Good button explains itself instead of failing."""
    with pytest.raises(gr.Error, match="Deblur an image first"):
        record_feedback(store, None, "up", "")
    assert not store.path.exists() or store.cases() == []


def test_export_writes_the_thumbs_down_cases_as_a_paired_folder_skeleton(
    stub: StubBackend, store: FeedbackStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stub backend: `python -m demo.feedback export DIR` writes blur/ and restored/ PNGs for each Bad rating (upright,
    aligned), sharp/ only where a ground truth came with it, and feedback.json; Good ones stay out."""
    record_feedback(store, rated_result(stub, tmp_path, "good", with_truth=False), "up", "")
    rotated_draft = rated_result(stub, tmp_path, "rot", with_truth=False, rotated=True)
    rotated = record_feedback(store, rotated_draft, "down", "blurry")
    with_truth = record_feedback(store, rated_result(stub, tmp_path, "pair", with_truth=True), "down", "")
    out = tmp_path / "export"

    main(["--db", str(store.path), "export", str(out)])

    ids = [int(m.split("#")[1].split(".")[0]) for m in (rotated, with_truth)]
    names = [f"{i:06d}.png" for i in ids]
    assert sorted(p.name for p in (out / "blur").iterdir()) == names
    assert sorted(p.name for p in (out / "restored").iterdir()) == names
    assert [p.name for p in (out / "sharp").iterdir()] == [names[1]]
    blur, restored = (Image.open(out / sub / names[0]) for sub in ("blur", "restored"))
    assert blur.size == restored.size == (64, 96)  # EXIF rotation applied, like the server does
    np.testing.assert_array_equal(np.array(restored.convert("RGB")), stub_restore(np.array(blur.convert("RGB"))))
    metadata = json.loads((out / "feedback.json").read_text())
    summary = [(m["id"], m["comment"], m["model_version"]) for m in metadata]
    assert summary == [(ids[0], "blurry", "2.0"), (ids[1], "", "2.0")]
    assert metadata[0]["sharp"].startswith("missing") and metadata[1]["sharp"] == "provided"
    assert "wrote 2 case(s)" in capsys.readouterr().out


def test_export_of_an_empty_database_writes_an_empty_skeleton(store: FeedbackStore, tmp_path: Path) -> None:
    """No feedback yet: the folders and an empty feedback.json exist, so scripts downstream need no special case."""
    main(["--db", str(store.path), "export", str(tmp_path / "out")])

    assert json.loads((tmp_path / "out" / "feedback.json").read_text()) == []
    assert all((tmp_path / "out" / sub).is_dir() for sub in ("blur", "restored", "sharp"))


def test_store_refuses_an_unknown_verdict(store: FeedbackStore) -> None:
    """Only Good ("up") and Bad ("down") are verdicts."""
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    with pytest.raises(ValueError, match="verdict"):
        store.add(FeedbackCase("meh", "x.png", png.getvalue(), png.getvalue(), {}))
