"""Start, stop and inspect a local TorchServe (stdlib + the REST client; never torch).

TorchServe facts this relies on (0.12, read from ts/model_server.py and the frontend):
- ``torchserve --start`` spawns the Java frontend and exits; the frontend's pid goes to
  ``$TMPDIR/.model_server.pid`` and ``torchserve --stop`` stops whatever that file names, so a
  caller that needs an isolated server (tests) gives it its own TMPDIR/TEMP.
- The frontend writes ``key_file.json`` and ``logs/`` into its working directory: we start it in
  the run directory; ``--stop`` deletes ``key_file.json`` from *its* working directory.
- ``allowed_urls`` is a comma-separated list of Java regexes, matched case-insensitively against the
  whole ``url`` of a registration; a url that is no URL (a file name) is looked up in the model store.
  ``launch`` therefore starts TorchServe with an effective copy of the config whose rule names this
  server's own store by its absolute path (see ``store_url_pattern``).
"""

from __future__ import annotations

import os
import string
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from shutil import which
from typing import Any

from serve.client import MODEL_NAME, BackendError, TorchServeClient

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "config.properties"
DEFAULT_STORE = REPO_ROOT / "model_store"
DEFAULT_RUN_DIR = REPO_ROOT / "run"
PID_FILE = ".model_server.pid"
FRONTEND_CLASS = "org.pytorch.serve.ModelServer"
CONSOLE_LOG = "console.log"
LOG_FILES = ("ts_log.log", "model_log.log", CONSOLE_LOG)
POLL_SECONDS = 1.0
EFFECTIVE_CONFIG = "config.effective.properties"  # in the run dir: config + allowed_urls anchored to the store
# An archive's file name: dot-separated segments (so never "..", never a "/"), ending in .mar.
ARCHIVE_NAME_PATTERN = "[A-Za-z0-9_-]+([.][A-Za-z0-9_-]+)*[.]mar"
PATH_LITERALS = frozenset(string.ascii_letters + string.digits + "_-/")
# Characters a path may hold that are literal inside a Java character class. Backslash (a properties
# escape), "," (splits allowed_urls), "[", "]", "^" and anything non-ASCII or unprintable are refused.
PATH_BRACKETED = frozenset(" .~+@%()$!{}|*?#'\";:=<>&")


class ServerError(RuntimeError):
    """TorchServe could not be started or stopped; the message is meant for the operator."""


def read_properties(path: Path) -> dict[str, str]:
    """key=value lines of a TorchServe config.properties (comments and blanks skipped)."""
    properties = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            properties[key.strip()] = value.strip()
    return properties


def client_for(
    config: Path, run_dir: Path, timeout: float = 120.0, env: Mapping[str, str] | None = None
) -> TorchServeClient:
    """A client for the server ``config`` describes; DEBLUR_* environment variables take precedence."""
    env = os.environ if env is None else env
    properties = read_properties(config) if config.is_file() else {}
    inference = properties.get("inference_address", "http://127.0.0.1:8080")
    management = properties.get("management_address", "http://127.0.0.1:8081")
    metrics = properties.get("metrics_address", "http://127.0.0.1:8082")
    return TorchServeClient(
        inference_url=env.get("DEBLUR_INFERENCE_URL", inference).rstrip("/"),
        management_url=env.get("DEBLUR_MANAGEMENT_URL", management).rstrip("/"),
        key_file=Path(env.get("DEBLUR_KEY_FILE", run_dir / "key_file.json")),
        timeout=timeout,
        metrics_url=env.get("DEBLUR_METRICS_URL", metrics).rstrip("/"),
    )


def torchserve_executable() -> str:
    """The ``torchserve`` launcher of this interpreter's environment (the venv), else PATH's."""
    beside_python = Path(sys.executable).parent / "torchserve"
    found = str(beside_python) if beside_python.is_file() else which("torchserve")
    if found is None:
        raise ServerError("torchserve is not installed in this environment (pip install -r requirements.txt)")
    return found


def server_pid(env: Mapping[str, str] | None = None) -> int | None:
    """Pid of the running frontend from TorchServe's pid file, None if it is not running."""
    env = os.environ if env is None else env
    # Same lookup order as tempfile.gettempdir(), which the launcher uses for the pid file.
    tmp = next((env[name] for name in ("TMPDIR", "TEMP", "TMP") if env.get(name) and Path(env[name]).is_dir()), "/tmp")
    try:
        pid = int((Path(tmp) / PID_FILE).read_text().split()[0])
        # A stale file may name a recycled pid or a zombie: check it is still the Java frontend.
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if FRONTEND_CLASS.encode() in command_line else None


def log_tail(run_dir: Path, lines: int = 25) -> str:
    """The last lines of each TorchServe log in ``run_dir/logs``, for error messages."""
    parts = []
    for name in LOG_FILES:
        path = run_dir / "logs" / name
        if path.is_file():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(parts) or f"(no logs in {run_dir / 'logs'})"


def child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """The launcher's environment, minus TS_CONFIG_FILE (it would silently override --ts-config)."""
    child = dict(os.environ if env is None else env)
    child.pop("TS_CONFIG_FILE", None)
    return child


def check_start_inputs(store: Path, config: Path) -> None:
    if not config.is_file():
        raise ServerError(f"config file not found: {config}")
    if not store.is_dir():
        raise ServerError(f"model store not found: {store} (build an archive with `python -m model_archive`)")
    for archive in filter(None, read_properties(config).get("load_models", "").split(",")):
        if archive.strip().endswith(".mar") and not (store / archive.strip()).is_file():
            raise ServerError(
                f"{store / archive.strip()} not found: build it with "
                "`python -m model_archive --checkpoint PATH --version 1.0`"
            )


def store_url_pattern(store: Path) -> str:
    """The ``allowed_urls`` rule admitting only ``file://`` URLs of archives directly inside ``store``.

    The store's absolute path is written literally: a dot as ``[.]`` (no backslash, which Java properties
    would eat), other punctuation in brackets, and case-sensitively (``(?-i:...)``; TorchServe matches
    case-insensitively and Linux paths are not). A path this cannot express is refused.
    """
    path = str(store.resolve())
    odd = sorted({char for char in path if char not in PATH_LITERALS | PATH_BRACKETED})
    if odd:
        raise ServerError(
            f"the model store path {path!r} holds characters the allowed_urls rule cannot express "
            f"({', '.join(map(repr, odd))}): use a store whose path has none"
        )
    quoted = "".join(char if char in PATH_LITERALS else f"[{char}]" for char in path)
    return f"(?-i:file://{quoted}/{ARCHIVE_NAME_PATTERN})"


def effective_config(config: Path, store: Path, run_dir: Path) -> Path:
    """``config`` with ``allowed_urls`` replaced by the rule for ``store``, written to ``run_dir``."""
    lines = config.read_text().splitlines()
    kept = [line for line in lines if line.strip().partition("=")[0].strip() != "allowed_urls"]
    header = [
        "# Written by `python -m serve start` at each start; edit the config it was made from, not this copy.",
        f"# Only archives inside this server's model store may be registered by URL: {ARCHIVE_NAME_PATTERN}",
    ]
    target = run_dir / EFFECTIVE_CONFIG
    target.write_text("\n".join([*header, *kept, f"allowed_urls={store_url_pattern(store)}"]) + "\n")
    return target


def launch(store: Path, config: Path, run_dir: Path, env: Mapping[str, str] | None = None) -> None:
    """Run ``torchserve --start`` from ``run_dir``; returns once the launcher has spawned the frontend.

    TorchServe reads an effective copy of ``config`` (``run_dir/config.effective.properties``) whose
    ``allowed_urls`` admits archives in ``store`` only.
    """
    check_start_inputs(store, config)
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [
        torchserve_executable(),
        "--start",
        "--ncs",  # no config snapshots: the effective config written here is the single source
        "--ts-config",
        str(effective_config(config, store, run_dir)),
        "--model-store",
        str(store.resolve()),
    ]
    # The frontend inherits the launcher's stdout: a file, never a pipe (a pipe would block
    # this call until Java exits). A new session keeps Ctrl-C in this terminal away from it.
    with (logs / CONSOLE_LOG).open("ab") as console:
        result = subprocess.run(
            command,
            cwd=run_dir,
            env=child_env(env),
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            check=False,
        )
    if result.returncode != 0:
        raise ServerError(f"torchserve --start failed (exit {result.returncode}):\n{log_tail(run_dir, 10)}")


def model_ready(client: TorchServeClient, model: str = MODEL_NAME) -> bool:
    """True when some version of ``model`` has a worker in state READY."""
    versions = client.management("GET", f"/models/{model}/all")
    return any(worker.get("status") == "READY" for version in versions for worker in version.get("workers", []))


def wait_until_ready(
    client: TorchServeClient,
    run_dir: Path,
    timeout: float,
    model: str = MODEL_NAME,
    env: Mapping[str, str] | None = None,
) -> None:
    """Poll until /ping is Healthy and ``model`` has a READY worker; fail early if the server died."""
    deadline = time.monotonic() + timeout
    last_problem = "no answer yet"
    while time.monotonic() < deadline:
        if server_pid(env) is None:
            raise ServerError(f"TorchServe exited during start-up.\n{log_tail(run_dir)}")
        try:
            if client.ping() == "Healthy" and model_ready(client, model):
                return
            last_problem = f"model {model!r} has no READY worker yet"
        except BackendError as exc:  # not listening yet, key file not written yet, model not registered yet
            last_problem = str(exc)
        except ValueError as exc:  # key_file.json caught half-written (Java writes it in place)
            last_problem = f"unreadable key file: {exc}"
        time.sleep(POLL_SECONDS)
    raise ServerError(
        f"TorchServe is not ready after {timeout:.0f} s ({last_problem}). It is still running: "
        f"`python -m serve stop` stops it.\n{log_tail(run_dir)}"
    )


def start(
    store: Path, config: Path, run_dir: Path, timeout: float, env: Mapping[str, str] | None = None
) -> TorchServeClient:
    """Start TorchServe in the background (unless it already runs) and wait for the deblur model."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if server_pid(env) is None:  # idempotent: `make demo` after `make serve` reuses the running server
        launch(store, config, run_dir, env)
    client = client_for(config, run_dir, timeout=5.0, env=env)
    wait_until_ready(client, run_dir, timeout, env=env)
    return client


def stop(run_dir: Path, env: Mapping[str, str] | None = None, timeout: float = 90.0) -> str:
    """``torchserve --stop`` from ``run_dir`` (so its key file is removed); fine if nothing runs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            [torchserve_executable(), "--stop", "--foreground"],  # --foreground: wait for the frontend to exit
            cwd=run_dir,
            env=child_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServerError(f"TorchServe did not stop within {timeout:.0f} s; its pid is {server_pid(env)}") from exc
    message = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        # A concurrent stop (`make stop` while the demo shuts down) removes the pid file under
        # the launcher, which then fails; the server is down all the same.
        if server_pid(env) is None:
            return "TorchServe has stopped (another stop finished first)."
        raise ServerError(f"torchserve --stop failed (exit {result.returncode}): {message}")
    return message or "TorchServe has stopped."


def describe(client: TorchServeClient) -> list[dict[str, Any]]:
    """Every registered version of every model, as the management API describes them."""
    names = [entry["modelName"] for entry in client.management("GET", "/models").get("models", [])]
    return [version for name in names for version in client.management("GET", f"/models/{name}/all")]
