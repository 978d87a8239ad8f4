"""A small REST client for TorchServe's inference and management APIs, with token auth.

TorchServe (≥ 0.11) writes its keys to ``key_file.json`` in the directory it was started from;
``make serve`` starts it in ``run/``. Every call reads the file afresh, so a restarted server
(new keys) needs no client restart.

Keys expire (``token_expiration_min``); TorchServe then answers ``400 InvalidKeyException``. A call
refused that way renews its key once through TorchServe's token API (``GET <management>/token?type=
inference|management`` with the key file's never-expiring "API" key as Bearer, which makes TorchServe
write a new key of that kind into the key file), re-reads the file and is sent again. Keys are never
logged or put into a message.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KEY_FILE = REPO_ROOT / "run" / "key_file.json"
MODEL_NAME = "deblur"
RENEWABLE_KEYS = ("inference", "management")  # the "API" key (for the token API) never expires
INVALID_KEY = "InvalidKeyException"
# One renewal at a time in this process: two threads refused together must not renew twice (the
# second renewal would invalidate the key the first one's retry is using).
RENEW_LOCK = threading.Lock()

log = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """TorchServe is unreachable or refused a request; ``status`` is its HTTP code (None if down), ``error``
    the handler's stable error code when the refusal came from the deblur handler (README "Errors")."""

    def __init__(self, message: str, status: int | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


def read_keys(key_file: str | Path) -> dict[str, str]:
    """{"inference": ..., "management": ...} from TorchServe's key file; {} if there is none."""
    path = Path(key_file)
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        # TorchServe creates the file empty and fills it a moment later: treat both as "no keys yet".
        return {}
    if not isinstance(data, dict):
        return {}
    return {name: entry["key"] for name, entry in data.items() if isinstance(entry, dict) and "key" in entry}


@dataclass
class TorchServeClient:
    inference_url: str = "http://127.0.0.1:8080"
    management_url: str = "http://127.0.0.1:8081"
    key_file: Path = DEFAULT_KEY_FILE
    timeout: float = 120.0
    session: requests.Session = field(default_factory=requests.Session, repr=False)
    metrics_url: str = "http://127.0.0.1:8082"

    @classmethod
    def from_env(cls) -> TorchServeClient:
        """Addresses and key file from DEBLUR_INFERENCE_URL / DEBLUR_MANAGEMENT_URL / DEBLUR_KEY_FILE."""
        return cls(
            inference_url=os.environ.get("DEBLUR_INFERENCE_URL", cls.inference_url).rstrip("/"),
            management_url=os.environ.get("DEBLUR_MANAGEMENT_URL", cls.management_url).rstrip("/"),
            key_file=Path(os.environ.get("DEBLUR_KEY_FILE", str(DEFAULT_KEY_FILE))),
            metrics_url=os.environ.get("DEBLUR_METRICS_URL", cls.metrics_url).rstrip("/"),
        )

    def _send(self, method: str, url: str, key: str | None, **kwargs: Any) -> requests.Response:
        headers = ({"Authorization": f"Bearer {key}"} if key else {}) | kwargs.pop("headers", {})
        try:
            return self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
        except requests.Timeout as exc:
            raise BackendError(f"TorchServe did not answer within {self.timeout:.0f} s ({url})") from exc
        except requests.ConnectionError as exc:
            raise BackendError(f"TorchServe is not reachable at {url}: is it running (make serve)?") from exc

    def _request(self, method: str, url: str, api: str, **kwargs: Any) -> requests.Response:
        key = read_keys(self.key_file).get(api)
        response = self._send(method, url, key, **kwargs)
        if api in RENEWABLE_KEYS and is_invalid_key(response):
            problem = self.renew_key(api, refused=key)
            if problem is not None:
                raise BackendError(f"{error_message(response)} ({problem})", response.status_code)
            response = self._send(method, url, read_keys(self.key_file).get(api), **kwargs)
        if response.status_code >= 400:
            raise BackendError(error_message(response), response.status_code, error_code(response))
        return response

    def renew_key(self, api: str, refused: str | None) -> str | None:
        """Have TorchServe write a new ``api`` key into the key file; None when done, else why not.

        Nothing is renewed when the key file already holds another key than the refused one (another
        thread or process renewed it, or TorchServe was restarted): the caller just retries with it.
        """
        with RENEW_LOCK:
            keys = read_keys(self.key_file)
            if keys.get(api) and keys.get(api) != refused:
                return None
            if not keys.get("API"):
                return f"the {api} key was refused and {self.key_file} holds no API key to renew it"
            url = f"{self.management_url}/token"
            response = self._send("GET", url, keys["API"], params={"type": api})
            if response.status_code >= 400:
                return f"renewing the {api} key failed: {error_message(response)}"
            log.info("TorchServe refused the %s key (expired?): renewed it through %s", api, url)
            return None

    def ping(self) -> str:
        """TorchServe's health status ("Healthy" / "Unhealthy")."""
        return self._request("GET", f"{self.inference_url}/ping", "inference").json().get("status", "unknown")

    def predictions_url(self, model: str = MODEL_NAME, version: str | None = None) -> str:
        return f"{self.inference_url}/predictions/{model}" + (f"/{version}" if version else "")

    def predict(
        self, image: bytes, model: str = MODEL_NAME, version: str | None = None, accept: str | None = None
    ) -> requests.Response:
        """POST raw image bytes to /predictions/<model>[/<version>]; returns the response."""
        url = self.predictions_url(model, version)
        headers = {"Content-Type": "application/octet-stream"} | ({"Accept": accept} if accept else {})
        return self._request("POST", url, "inference", data=image, headers=headers)

    def predict_json(self, payload: dict[str, Any], model: str = MODEL_NAME, version: str | None = None) -> Any:
        return self.post_json(payload, model, version).json()

    def post_json(
        self, payload: dict[str, Any], model: str = MODEL_NAME, version: str | None = None
    ) -> requests.Response:
        """POST a JSON body to /predictions/<model>[/<version>]; the response whatever its content type."""
        url = self.predictions_url(model, version)
        return self._request("POST", url, "inference", json=payload)

    def metrics(self) -> str:
        """TorchServe's Prometheus text from the metrics API (which takes no token)."""
        return self._request("GET", f"{self.metrics_url}/metrics", "metrics").text

    def management(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the management API (``path`` like "/models/deblur") and decode its JSON answer."""
        response = self._request(method, f"{self.management_url}{path}", "management", **kwargs)
        return response.json() if response.content else {}


def is_invalid_key(response: requests.Response) -> bool:
    """TorchServe 0.12's answer to a missing, wrong or expired key: 400 {"type": "InvalidKeyException"}."""
    if response.status_code not in (400, 401, 403):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("type") == INVALID_KEY


def error_code(response: requests.Response) -> str | None:
    """The deblur handler's ``error`` field of a refusal; None for TorchServe's own errors."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), str) else None


def error_message(response: requests.Response) -> str:
    """An error JSON (TorchServe's {"code", "type", "message"} or the handler's {"code", "error", "message"})
    as one readable sentence."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    if isinstance(body, dict) and "message" in body:
        return f"HTTP {response.status_code}: {body['message']}"
    return f"HTTP {response.status_code}: {json.dumps(body)[:300]}"
