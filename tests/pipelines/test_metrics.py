"""magistrate's counters reach Ray's Prometheus endpoint: a judge job (a dry run: the same
actors and judge host, a tokenizer for an engine) on a Ray head this test starts on
127.0.0.1 with a known metrics port, then a scrape of that port (docs/metrics.md)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections import defaultdict

import pytest

from tests.conftest import EXAMPLES, REPO, free_port, ray_head, run_cli

_SAMPLE = re.compile(r"^(ray_magistrate_\w+)\{(.*)\} (\S+)$")


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """name, {judge, cause, kind} -> value, summed over the workers that reported it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict = defaultdict(float)
    for line in text.splitlines():
        if match := _SAMPLE.match(line):
            tags = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            keep = frozenset((k, v) for k, v in tags.items() if k in ("judge", "cause", "kind"))
            found[(match.group(1), keep)] += float(match.group(3))
    return found


@pytest.mark.ray
def test_judge_counters_on_rays_metrics_endpoint(tmp_path):
    pairs = [json.loads(line) for line in (EXAMPLES / "llmbar-demo.jsonl").read_text().splitlines()[:6]]
    lines = [json.dumps(p) for p in pairs]
    lines.append(json.dumps({"id": "bad-label", "prompt": "q?", "response_a": "a", "response_b": "b", "label": "X"}))
    lines.append('{"id": "dupkey", "prompt": "one", "prompt": "two", "response_a": "a", "response_b": "b"}')
    lines.append(json.dumps({"id": "long", "prompt": "q?", "response_a": "word " * 2000, "response_b": "b"}))
    source = tmp_path / "pairs.jsonl"
    source.write_text("\n".join(lines) + "\n")
    port = free_port()
    with ray_head(None, f"--metrics-export-port={port}") as (address, _, env):
        done = run_cli("judge", "--input", str(source), "--output", str(tmp_path / "out"), "--dry-run",
                       "--max-model-len", "1024", env={**env, "RAY_ADDRESS": address}, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["pairs"] == 9 and summary["errors"] == 3, summary
        judge = {("judge", "mt-bench")}
        want = {
            ("ray_magistrate_pairs_judged_total", frozenset(judge)): 9,
            ("ray_magistrate_error_rows_total", frozenset(judge | {("cause", "input")})): 2,
            ("ray_magistrate_error_rows_total", frozenset(judge | {("cause", "prompt_too_long")})): 1,
            ("ray_magistrate_tokens_total", frozenset(judge | {("kind", "prompt")})): summary["prompt_tokens"],
        }
        deadline = time.monotonic() + 120  # Ray reports metrics every few seconds; a bound, not a speed check
        while True:
            found = scrape(port)
            got = {key: found.get(key) for key in want}
            if got == want:
                break
            assert time.monotonic() < deadline, f"scraped {dict(found)}, want {want}"
            time.sleep(2)


def test_every_metric_is_documented_and_the_dashboard_uses_only_those():
    from magistrate.actors.metrics import METRICS

    doc = (REPO / "docs" / "metrics.md").read_text()
    board = (REPO / "deploy" / "grafana-magistrate.json").read_text()
    json.loads(board)
    scraped = {f"ray_{name}" + ("" if kind == "Histogram" else "_total") for name, (kind, *_) in METRICS.items()}
    assert all(f"`{name}`" in doc for name in scraped), scraped
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"ray_magistrate_\w+", board)}
    assert used and used <= scraped, used - scraped
