"""`ray job submit` against a Ray head started with `ray start --head` on this machine,
exactly as docs/README tell a user (Ray 2.60 starts the head with token auth: the token
lives in ~/.ray/auth_token and clients set RAY_AUTH_MODE=token)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from tests.conftest import EXAMPLES, REPO

pytestmark = pytest.mark.engine
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    port, dashboard = _free_port(), _free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2",
         "--disable-usage-stats"],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert start.returncode == 0, start.stdout + start.stderr
    yield f"http://127.0.0.1:{dashboard}", env
    subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_job_submit_judges_everything(ray_head, tmp_path, embedded_model):
    address, env = ray_head
    src = tmp_path / "pairs.jsonl"
    rows = [json.loads(line) for line in open(EXAMPLES / "llmbar-demo.jsonl")][:3]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--",
         "magistrate", "judge", "--input", str(src), "--output", str(out),
         "--max-model-len", "2048", "--gpu-memory-utilization", "0.2"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900,
    )
    assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-2000:]
    assert "succeeded" in submit.stdout.lower()
    written = pads.dataset(str(out / "verdicts"), format="parquet").to_table().to_pylist()
    assert sorted(r["id"] for r in written) == sorted(r["id"] for r in rows)
    assert all(r["winner"] in {"A", "B", "tie"} for r in written)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 3
