"""Verdict outputs built directly in the layout `magistrate judge` writes
(OUT/verdicts/unit-*.parquet in the fixed verdict schema plus passthrough columns,
OUT/summary.json, OUT/_run.json): no engine. Expected figures are recomputed in the
tests from the rows in plain Python, never with magistrate.analysis."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from magistrate.schema import MESSAGES, VERDICT_FIELDS

PASSTHROUGH = ("id", "prompt", "prompt_messages", "response_a", "response_b", "label", "subset", "model_a",
               "model_b")
SUBSETS = ("alpha", "beta", "gamma")
CAUSES = ("order ab: prompt is longer than the judge's context (4100 > 4096 tokens)",
          "prompt is empty")
# The cause each message is counted under: its kind, without the order and the figures.
CAUSE_KINDS = {CAUSES[0]: "prompt is longer than the judge's context", CAUSES[1]: "prompt is empty"}


def write_output(out: Path, rows: list[dict], files: int = 3, summary: dict | None = None) -> Path:
    """rows: dicts with any verdict or passthrough columns; others are null."""
    names = [c for c in PASSTHROUGH if any(c in r for r in rows)]
    fields = [pa.field(c, MESSAGES if c == "prompt_messages" else pa.string()) for c in names] + list(VERDICT_FIELDS)
    schema = pa.schema(fields)
    (out / "verdicts").mkdir(parents=True)
    step = -(-len(rows) // files)
    for n, start in enumerate(range(0, len(rows), step)):
        chunk = rows[start:start + step]
        table = pa.table({f.name: pa.array([r.get(f.name) for r in chunk], f.type) for f in schema}, schema=schema)
        pq.write_table(table, out / "verdicts" / f"unit-{n:016x}.parquet")
    if summary is not None:
        (out / "summary.json").write_text(json.dumps(summary))
    (out / "_run.json").write_text(json.dumps({"judge": "mt-bench", "order": "both"}))
    return out


def synthetic_rows(n: int = 240, seed: int = 7, labels: bool = True, subsets: bool = True) -> list[dict]:
    """Judged pairs in both orders, with errors, ties, labels and per-order verdicts that agree
    with the winner the way combine() makes them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"id": f"pair-{i:04d}", "prompt": f"question {i}", "response_a": f"answer a{i}",
               "response_b": f"answer b{i}", "judge": "mt-bench", "judge_version": 1,
               "mode": "logprob", "order": "both", "model": "tiny-judge", "run_id": "run-1"}
        if labels:
            row["label"] = rng.choice(("A", "A", "B", "tie"))
        if subsets:
            row["subset"] = SUBSETS[i % 3]
        row["injection_suspect"] = rng.random() < 0.1
        if rng.random() < 0.08:
            row.update(winner="error", error=rng.choice(CAUSES), ab_error="failed")
            rows.append(row)
            continue
        ab, ba = rng.choice("AB"), rng.choice(("A", "B", "tie"))
        # odd + even hundredths: p_a never falls on a bin edge, however the bins are computed
        ab_p = rng.choice((0.13, 0.31, 0.47, 0.53, 0.71, 0.89, 0.97))
        ba_p = rng.choice((0.08, 0.26, 0.44, 0.62, 0.78, 0.96))
        row.update(ab_verdict=ab, ba_verdict=ba, ab_p_a=ab_p, ba_p_a=ba_p, p_a=(ab_p + ba_p) / 2,
                   winner=ab if ab == ba else "tie", consistent=ab == ba,
                   ab_prompt_tokens=100 + i, ba_prompt_tokens=101 + i,
                   ab_completion_tokens=i % 5, ba_completion_tokens=i % 3)
        rows.append(row)
    return rows


@pytest.fixture
def report_rows() -> list[dict]:
    return synthetic_rows()


SUMMARY = {"pairs": 240, "seconds": 48.0, "pairs_per_second": 5.0, "units": 3, "units_skipped": 0,
           "this_run": {"units": 3, "pairs": 240, "errors": 0}}


@pytest.fixture
def report_output(tmp_path, report_rows) -> Path:
    return write_output(tmp_path / "out", report_rows, summary=SUMMARY)
