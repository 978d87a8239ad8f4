"""Load test of the inference API: `python -m bench.load --requests 200 --concurrency 8`.

Sends ``--requests`` PNG/JPEG images of mixed small sizes at ``--concurrency`` to a running
TorchServe (addresses and key file as for `python -m serve`: DEBLUR_INFERENCE_URL, DEBLUR_KEY_FILE,
else config.properties and run/key_file.json), or with ``--start`` to a private TorchServe it starts
on free loopback ports from ``--model-store`` (config.properties, changed by ``--set KEY=VALUE``)
and stops afterwards.

Every request is accounted for: a 200 whose image has the size that was sent (each request has its
own size, so a mixed-up answer is caught), an intended 503 because the job queue is full, another
error status, or no answer within ``--timeout``. The run passes (exit 0) when 200s + queue-full 503s
equal the requests sent. Prints the counts and the latency percentiles (p50, p90, p99, max).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from serve import server
from serve.client import TorchServeClient, read_keys
from serve.private import PrivateServer

QUEUE_FULL_WORDS = "has no worker to serve inference request"  # TorchServe's 503 when the job queue is full
DEFAULT_SIZES = "64x48,96x64,128x96,200x150"


@dataclass(frozen=True)
class Job:
    body: bytes
    size: tuple[int, int]  # (width, height) the answer must have


@dataclass(frozen=True)
class Outcome:
    status: int | None  # None: no answer (timeout, connection refused or reset)
    seconds: float
    detail: str = ""  # the error message, or why a 200 was wrong

    @property
    def queue_full(self) -> bool:
        return self.status == 503 and QUEUE_FULL_WORDS in self.detail

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.detail


@dataclass(frozen=True)
class LoadReport:
    outcomes: tuple[Outcome, ...]
    sent: int
    concurrency: int
    wall_seconds: float

    @property
    def successes(self) -> int:
        return sum(o.ok for o in self.outcomes)

    @property
    def queue_full(self) -> int:
        return sum(o.queue_full for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not (o.ok or o.queue_full)]

    @property
    def accounted(self) -> bool:
        """Every request sent got an intended answer: a correct image or a queue-full 503."""
        return len(self.outcomes) == self.sent == self.successes + self.queue_full

    def percentile(self, q: float) -> float:
        latencies = [o.seconds for o in self.outcomes if o.ok]
        return float(np.percentile(latencies, q)) if latencies else float("nan")

    def summary(self) -> str:
        statuses = Counter("no answer" if o.status is None else str(o.status) for o in self.outcomes)
        lines = [
            f"requests sent {self.sent}, concurrency {self.concurrency}, wall time {self.wall_seconds:.1f} s, "
            f"throughput {self.successes / self.wall_seconds:.2f} images/s",
            f"answered 200 (correct image) {self.successes}, 503 queue full {self.queue_full}, "
            f"other {len(self.failures)}; statuses {dict(sorted(statuses.items()))}",
            f"latency of successes: p50 {self.percentile(50):.3f} s, p90 {self.percentile(90):.3f} s, "
            f"p99 {self.percentile(99):.3f} s, max {self.percentile(100):.3f} s",
        ]
        lines += [f"  failure: {o.status} {o.detail[:200]}" for o in self.failures[:5]]
        return "\n".join(lines)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        width, _, height = item.strip().lower().partition("x")
        sizes.append((int(width), int(height)))
    return sizes


def make_jobs(count: int, sizes: Sequence[tuple[int, int]], seed: int = 0) -> list[Job]:
    """``count`` images cycling through ``sizes``, each widened by its index mod 16 (distinct sizes
    among neighbours), alternately PNG and JPEG."""
    rng = np.random.default_rng(seed)
    jobs = []
    for index in range(count):
        base_width, height = sizes[index % len(sizes)]
        width = base_width + index % 16
        pixels = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG" if index % 2 == 0 else "JPEG")
        jobs.append(Job(buffer.getvalue(), (width, height)))
    return jobs


def send_one(url: str, key: str, job: Job, timeout: float) -> Outcome:
    """POST one image; classify the answer (never raises)."""
    started = time.perf_counter()
    try:
        response = requests.post(
            url,
            data=job.body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        return Outcome(None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        return Outcome(response.status_code, seconds, response.text[:500])
    return Outcome(200, seconds, wrong_answer(response.content, job.size))


def wrong_answer(body: bytes, size: tuple[int, int]) -> str:
    """'' when ``body`` is an image of ``size``; otherwise what is wrong with it."""
    try:
        got = Image.open(io.BytesIO(body)).size
    except OSError as exc:
        return f"the answer is not an image: {exc}"
    return "" if got == size else f"answer is {got[0]}×{got[1]}, request was {size[0]}×{size[1]}"


def run_load(client: TorchServeClient, jobs: Sequence[Job], concurrency: int, timeout: float) -> LoadReport:
    """Send ``jobs`` with at most ``concurrency`` in flight; each request is bounded by ``timeout``."""
    key = read_keys(client.key_file)["inference"]
    url = f"{client.inference_url}/predictions/deblur"
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = tuple(pool.map(lambda job: send_one(url, key, job, timeout), jobs))
    return LoadReport(outcomes, len(jobs), concurrency, time.perf_counter() - started)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated WxH, cycled (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default %(default)s)")
    parser.add_argument("--start", action="store_true", help="start a private TorchServe and stop it afterwards")
    parser.add_argument("--model-store", type=Path, default=server.DEFAULT_STORE)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --start: override a config.properties key, e.g. --set job_queue_size=2 (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the counts and percentiles here")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be ≥ 1")
    if any("=" not in item for item in args.set):
        parser.error("--set takes KEY=VALUE")
    return args


def write_json(path: Path, report: LoadReport) -> None:
    figures = {
        "sent": report.sent,
        "concurrency": report.concurrency,
        "successes": report.successes,
        "queue_full": report.queue_full,
        "failures": len(report.failures),
        "wall_seconds": round(report.wall_seconds, 2),
        **{f"p{q}_seconds": round(report.percentile(q), 4) for q in (50, 90, 99, 100)},
    }
    path.write_text(json.dumps(figures, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = make_jobs(args.requests, parse_sizes(args.sizes))
    with contextlib.ExitStack() as stack:
        if args.start:
            print(f"starting a private TorchServe from {args.model_store} ...", flush=True)
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deblur-load-")))
            overrides = dict(item.split("=", 1) for item in args.set)
            client = stack.enter_context(PrivateServer(args.model_store, work_dir, extra_config=overrides, timeout=300))
        else:
            client = server.client_for(server.DEFAULT_CONFIG, server.DEFAULT_RUN_DIR)
        report = run_load(client, jobs, args.concurrency, args.timeout)
    print(report.summary())
    if args.json:
        write_json(args.json, report)
    return 0 if report.accounted else 1


if __name__ == "__main__":
    sys.exit(main())
