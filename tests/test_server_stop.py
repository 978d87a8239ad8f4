"""`serve stop` when the launcher's own --stop fails: fine if the server is down, an error if it runs.

The launcher is replaced by a script that fails as TorchServe's does when a concurrent stop has
removed its pid file; the frontend is stood in for by a process whose command line names it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve import server

RACE_ERROR = "FileNotFoundError: [Errno 2] No such file or directory: '/tmp/.model_server.pid'"


@pytest.fixture
def failing_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "torchserve"
    script.write_text(f'#!/bin/sh\necho "{RACE_ERROR}" >&2\nexit 1\n')
    script.chmod(0o755)
    monkeypatch.setattr(server, "torchserve_executable", lambda: str(script))
    return script


def wait_for_exec(pid: int, marker: str, timeout: float = 30.0) -> None:
    """Until the child's command line is its own: right after fork it still shows pytest's (a busy machine
    widened that window enough to fail this test once)."""
    deadline = time.monotonic() + timeout
    while marker.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, f"process {pid} never ran its command"
        time.sleep(0.01)


@pytest.fixture
def fake_frontend(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A live process that ``server_pid`` takes for the frontend, named by a pid file in its own TMPDIR."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", server.FRONTEND_CLASS])
    try:
        wait_for_exec(process.pid, server.FRONTEND_CLASS)
        (tmp / server.PID_FILE).write_text(f"{process.pid}\n")
        yield {"TMPDIR": str(tmp), "PATH": "/usr/bin:/bin"}
    finally:
        process.kill()
        process.wait()


def test_failed_stop_of_a_server_that_is_already_down_reports_stopped(failing_launcher: Path, tmp_path: Path) -> None:
    empty_tmp = tmp_path / "empty"
    empty_tmp.mkdir()
    message = server.stop(tmp_path / "run", env={"TMPDIR": str(empty_tmp), "PATH": "/usr/bin:/bin"})
    assert "stopped" in message


def test_failed_stop_of_a_running_server_is_an_error(
    failing_launcher: Path, fake_frontend: dict[str, str], tmp_path: Path
) -> None:
    assert server.server_pid(fake_frontend) is not None
    with pytest.raises(server.ServerError, match="FileNotFoundError"):
        server.stop(tmp_path / "run", env=fake_frontend)
