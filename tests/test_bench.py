"""The benchmark scripts run end to end on tiny inputs (their figures are measured, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.__main__ as speed
import bench.models as model_costs


def test_speed_benchmark_writes_every_table_in_process(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    speed.main([
        "--checkpoint", str(tiny_checkpoint), "--sizes", "96x80", "--memory-sizes", "", "--variant-size", "128x96",
        "--repeats", "1", "--tile", "64", "--overlap", "16", "--no-rest", "--json", str(out),
    ])  # fmt: skip
    results = json.loads(out.read_text())
    assert [r["size"] for r in results["sizes"]] == ["96x80"] and results["sizes"][0]["compute_s"] > 0
    assert len(results["variants"]) == 8 and results["variants"][-3]["speedup_vs_seed"] > 0
    stages = {r["stage"]: r for r in results["stages"]}
    assert "encode PNG (handler's writer)" in stages and stages["model (tiles, batches)"]["share_of_model"] == 1


def test_model_cost_table_lists_every_candidate(capsys: pytest.CaptureFixture[str]) -> None:
    model_costs.main(["--tile", "32", "--batch", "1", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(model_costs.CANDIDATES)  # header + one measured row each
    assert all(float(row.split("|")[3]) > 0 for row in rows[1:])
