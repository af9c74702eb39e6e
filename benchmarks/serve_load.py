"""The online endpoint under a bounded load and attack: many concurrent clients, a mix of
good pairs, batches, oversized and malformed bodies and bad keys, while /healthz is polled.

    .venv/bin/python -m benchmarks.serve_load                  # starts `magistrate serve`
    .venv/bin/python -m benchmarks.serve_load --url http://127.0.0.1:8000 --key "$MAGISTRATE_API_KEY"

Prints the answers by kind and status, latency percentiles and the /healthz answers as JSON
(docs/serving.md has a run). tests/serve/test_serve_command.py runs the same load against
`magistrate serve` and checks every answer, never timings.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
PAIRS = REPO / "examples" / "data" / "llmbar-demo.jsonl"
# Which answers each kind of request may get: good work is judged or told to come back.
EXPECTED = {
    "pair": {200, 503}, "batch": {200, 503}, "over_cap": {413}, "oversized_body": {413},
    "oversized_field": {422}, "malformed": {422}, "deep": {422}, "bad_key": {401},
}
KINDS = ("pair", "pair", "pair", "batch", "over_cap", "oversized_body", "oversized_field", "malformed",
         "deep", "bad_key")


@dataclass
class Answer:
    kind: str
    status: int | None  # None: no answer (a timeout or a broken connection)
    seconds: float
    retry_after: str | None = None
    error_shape: bool = True  # a 4xx/5xx body is {"error": "..."}
    problem: str | None = None


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    health: list[tuple[int | None, float]] = field(default_factory=list)
    seconds: float = 0.0

    def figures(self) -> dict:
        by = Counter((a.kind, a.status) for a in self.answers)
        judged = sorted(a.seconds for a in self.answers if a.status == 200)
        refused = sorted(a.seconds for a in self.answers if a.status != 200)
        health = sorted(s for _, s in self.health)
        return {
            "requests": len(self.answers), "seconds": round(self.seconds, 1),
            "answers": {f"{k} {s}": n for (k, s), n in sorted(by.items(), key=str)},
            "judged_ms": _percentiles(judged), "refused_ms": _percentiles(refused),
            "healthz": {"polls": len(self.health), "ok": sum(s == 200 for s, _ in self.health),
                        "ms": _percentiles(health)},
        }


def _percentiles(seconds: list[float]) -> dict | None:
    if not seconds:
        return None
    pick = lambda q: round(1000 * seconds[min(len(seconds) - 1, int(q * len(seconds)))], 1)  # noqa: E731
    return {"n": len(seconds), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": pick(1.0)}


def pairs() -> list[dict]:
    with open(PAIRS) as f:
        return [{k: r[k] for k in ("id", "prompt", "response_a", "response_b")} for r in map(json.loads, f)]


def _request(kind: str, i: int, info: dict) -> tuple[str, bytes, dict]:
    """(path, body, extra headers) of request i of this kind."""
    good = pairs()
    pair = good[i % len(good)]
    if kind == "pair":
        return "/v1/judge", json.dumps(pair).encode(), {}
    if kind == "batch":
        return "/v1/judge/batch", json.dumps({"pairs": [good[(i + k) % len(good)] for k in range(3)]}).encode(), {}
    if kind == "over_cap":
        n = min(info["max_batch_pairs"], info["max_prompts_in_flight"] // (2 if info["order"] == "both" else 1) + 1)
        return "/v1/judge/batch", json.dumps({"pairs": [pair] * n}).encode(), {}
    if kind == "oversized_body":
        return "/v1/judge", json.dumps({**pair, "response_a": "a" * info["max_body_bytes"]}).encode(), {}
    if kind == "oversized_field":
        return "/v1/judge", json.dumps({**pair, "response_b": "b" * (info["max_field_chars"] + 1)}).encode(), {}
    if kind == "malformed":
        return "/v1/judge", b'{"prompt": "Hi?", "response_a": ', {}
    if kind == "deep":
        return "/v1/judge", b'{"prompt": "Hi?", "response_a": "a", "response_b": "b", "x": ' + \
            b"[" * 3000 + b"]" * 3000 + b"}", {}
    if kind == "bad_key":
        return "/v1/judge", json.dumps(pair).encode(), {"Authorization": "Bearer not-the-key"}
    raise ValueError(kind)


def run_load(url: str, key: str | None, requests_total: int = 320, clients: int = 64,
             timeout: float = 300.0, health_every: float = 0.5) -> Load:
    """Send `requests_total` requests from `clients` threads at once (KINDS in turn) and
    poll /healthz throughout. Bounded: every request has `timeout`."""
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    info = requests.get(f"{url}/v1/judges", headers=auth, timeout=60).json()
    load, done = Load(), threading.Event()

    def poll():
        while not done.is_set():
            started = time.monotonic()
            try:
                status = requests.get(f"{url}/healthz", timeout=30).status_code
            except requests.RequestException:
                status = None
            load.health.append((status, time.monotonic() - started))
            done.wait(health_every)

    def send(i: int) -> Answer:
        kind = KINDS[i % len(KINDS)]
        path, body, headers = _request(kind, i, info)
        started = time.monotonic()
        try:
            r = requests.post(f"{url}{path}", data=body, timeout=timeout,
                              headers={**auth, "Content-Type": "application/json", **headers})
        except requests.RequestException as exc:
            return Answer(kind, None, time.monotonic() - started, problem=type(exc).__name__)
        shape = r.status_code < 400 or isinstance(_json(r).get("error"), str)
        return Answer(kind, r.status_code, time.monotonic() - started, r.headers.get("Retry-After"), shape,
                      None if r.status_code < 400 else r.text[:200])

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        load.answers = list(pool.map(send, range(requests_total)))
    load.seconds = time.monotonic() - started
    done.set()
    poller.join(timeout=60)
    return load


def _json(r: requests.Response) -> dict:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def start_serve(model: str | None, port: int, key: str, *extra: str, log: Path) -> subprocess.Popen:
    """`magistrate serve` on loopback in a Ray of its own, in a session of its own."""
    env = {**os.environ, "MAGISTRATE_API_KEY": key, "RAY_ADDRESS": "local", "RAY_USAGE_STATS_ENABLED": "0"}
    args = [sys.executable, "-m", "magistrate.cli", "serve", "--port", str(port), *extra]
    if model:
        args += ["--model", model]
    return subprocess.Popen(args, env=env, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"magistrate serve exited: {log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"magistrate serve was not ready in {timeout} s: {log.read_text()[-3000:]}")
        time.sleep(2)


def stop_serve(proc: subprocess.Popen) -> int:
    """Ctrl-C, as a user stops it; then whatever of its session is left."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an endpoint already running; else `magistrate serve` is started")
    parser.add_argument("--key", default=os.environ.get("MAGISTRATE_API_KEY"))
    parser.add_argument("--model", default=None, help="for the started endpoint; default the embedded judge")
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--serve-args", default="--max-prompts-in-flight 32 --max-body-bytes 1048576 "
                                                "--max-field-chars 100000")
    args = parser.parse_args()
    proc = None
    if args.url is None:
        args.key = args.key or "bench-" + secrets.token_hex(8)
        log = Path("/tmp/magistrate-serve-load.log")
        proc = start_serve(args.model, args.port, args.key, *args.serve_args.split(), log=log)
        args.url = f"http://127.0.0.1:{args.port}"
        wait_ready(args.url, proc, log)
    try:
        load = run_load(args.url, args.key, args.requests, args.clients)
        print(json.dumps({"url": args.url, "serve_args": args.serve_args, **load.figures()}, indent=2))
    finally:
        if proc is not None:
            stop_serve(proc)


if __name__ == "__main__":
    main()
