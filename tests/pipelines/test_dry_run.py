"""`--dry-run` over 20,480 pairs in ten units (over the duplicate-id pass's in-driver size,
so that pass runs on Ray Data as for a large input): renders and counts tokens with the judge's
tokenizer, skips the engine, writes every row, prints token totals and a GPU-hours
estimate. The driver's memory (it stays flat because the data streams through Ray Data)
is a benchmark's, not a test's: `make bench`, section `scaling` (benchmarks/run.py,
dry runs over 10k, 100k and 1M rows, the driver's peak RSS; docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from tests.conftest import MAGISTRATE, REPO

pytestmark = pytest.mark.slow

ROWS = 20_480


def _write_pairs(path, rows: int) -> None:
    ids = [f"p{i}" for i in range(rows)]
    table = pa.table({
        "id": ids,
        "prompt": [f"Question {i}: what is {i} plus {i}?" for i in range(rows)],
        "response_a": [f"It is {2 * i}." for i in range(rows)],
        "response_b": [f"Maybe {i}." for i in range(rows)],
    })
    pq.write_table(table, path, row_group_size=4_000)


def test_dry_run_writes_every_row_and_an_estimate(tmp_path, embedded_model, shared_ray):
    from magistrate.pipelines.duplicate_ids import IN_DRIVER_ROWS

    assert ROWS > IN_DRIVER_ROWS
    src = tmp_path / "pairs.parquet"
    _write_pairs(src, ROWS)
    out = tmp_path / "out"
    result = subprocess.run(
        [*MAGISTRATE, "judge", "--input", str(src), "--output", str(out), "--dry-run",
         "--batch-size", "2048", "--gpu", "h100"],
        capture_output=True, text=True, cwd=REPO, timeout=880, env={**os.environ, **shared_ray.join()},
    )
    stdout = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]

    ids = pads.dataset(str(out / "verdicts"), format="parquet").to_table(columns=["id"]).column("id")
    assert len(ids) == ROWS and len(set(ids.to_pylist())) == ROWS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == ROWS and summary["winners"]["error"] == 0
    # Every pair was rendered in both orders with the long MT-Bench system prompt.
    assert summary["prompt_tokens"] > ROWS * 2 * 150
    assert summary["completion_tokens"] == 0
    assert summary["estimate"]["gpu"] == "h100" and summary["estimate"]["gpu_hours"] > 0
    assert "GPU-hours" in stdout and "tokens: prompt / completion" in stdout
