"""`magistrate select`: DPO pairs as TRL's DPOTrainer reads them (prompt, chosen, rejected),
the kept rows recomputed here from the verdicts."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from tests.analysis.conftest import synthetic_rows, write_output
from tests.conftest import invoke_cli


def _expected(rows: list[dict], min_confidence: float, consistent_only: bool) -> dict[str, tuple]:
    kept = {}
    for r in rows:
        if r.get("winner") == "A":
            confidence, chosen, rejected = r["p_a"], r["response_a"], r["response_b"]
        elif r.get("winner") == "B":
            confidence, chosen, rejected = 1 - r["p_a"], r["response_b"], r["response_a"]
        else:
            continue
        if confidence >= min_confidence and (r.get("consistent") is True or not consistent_only):
            kept[r["id"]] = (r["prompt"], chosen, rejected, confidence)
    return kept


@pytest.mark.parametrize("min_confidence, consistent_only", [(0.0, False), (0.6, False), (0.6, True)])
def test_selected_pairs(tmp_path, min_confidence, consistent_only):
    rows = synthetic_rows(300, seed=11)
    for i, r in enumerate(rows):  # some one-order verdicts: consistent is null there
        if i % 7 == 0 and r["winner"] != "error":
            r["consistent"] = None
    out = write_output(tmp_path / "out", rows)
    args = ["select", str(out), "--min-confidence", str(min_confidence), "--output", str(tmp_path / "dpo")]
    result = invoke_cli(*args, *(["--consistent-only"] if consistent_only else []))
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "dpo" / "dpo.parquet")
    assert table.column_names == ["id", "prompt", "chosen", "rejected", "confidence"]
    got = {r["id"]: (r["prompt"], r["chosen"], r["rejected"], r["confidence"]) for r in table.to_pylist()}
    want = _expected(rows, min_confidence, consistent_only)
    assert got.keys() == want.keys() and len(got) > 0
    for key, (prompt, chosen, rejected, confidence) in want.items():
        assert got[key][:3] == (prompt, chosen, rejected)
        assert got[key][3] == pytest.approx(confidence)
    assert result.stdout.startswith(f"{len(want)} pairs written to {tmp_path / 'dpo' / 'dpo.parquet'}")
    assert "tie" in result.stdout and "error" in result.stdout


def test_output_file_name_and_trl_shape(tmp_path):
    out = write_output(tmp_path / "out", synthetic_rows(50), files=1)
    target = tmp_path / "sets" / "train.parquet"
    result = invoke_cli("select", str(out), "--min-confidence", "0.5", "--output", str(target))
    assert result.returncode == 0, result.stderr
    rows = pq.read_table(target).to_pylist()
    assert rows and all(isinstance(r[c], str) and r[c] for r in rows for c in ("prompt", "chosen", "rejected"))
    assert all(r["chosen"] != r["rejected"] for r in rows)
