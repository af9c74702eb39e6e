"""DPO pairs from verdicts: prompt / chosen / rejected, as TRL's DPOTrainer reads them.

chosen is the winner's response, rejected the other; a pair is kept when the judge
named a winner (ties and errors are left out), its probability for that winner
(p_a for A, 1 - p_a for B) is at least --min-confidence, and, with --consistent-only, both
orders agreed. With a calibration (--calibration), that probability is the calibrated
`confidence`, and when the calibration has a decision threshold only `decided` pairs are
kept unless decided_only is false (docs/calibration.md). Written as one Parquet file,
streamed batch by batch.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from magistrate.analysis.output import Verdicts
from magistrate.judges.calibration import Calibration, apply
from magistrate.pipelines import locate

DPO_SCHEMA = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("chosen", pa.string()),
                        ("rejected", pa.string()), ("confidence", pa.float64())])
_COLUMNS = ("id", "prompt", "response_a", "response_b", "winner", "p_a", "consistent", "ab_p_a", "ba_p_a")
DEFAULT_NAME = "dpo.parquet"


def _calibrated(rows: dict[str, list], calibration: Calibration | None, decided_only: bool) -> None:
    """Adds each row's `confidence` (calibrated) and `undecided` to the batch, with a calibration."""
    if calibration is None:
        rows["confidence"] = rows["undecided"] = [None] * len(rows["id"])
        return
    _, confidence, decided = apply(calibration, rows["ab_p_a"], rows["ba_p_a"], rows["p_a"], rows["winner"])
    rows["confidence"] = [None if c != c else float(c) for c in confidence]  # NaN: no confidence
    rows["undecided"] = ([False] * len(confidence) if decided is None or not decided_only
                         else [not d for d in decided])


def _reason(row: dict, min_confidence: float, consistent_only: bool) -> tuple[str, float | None]:
    """Why a row is left out ("" when kept), and the winner's probability (calibrated, with
    a calibration)."""
    winner = row["winner"]
    if winner not in ("A", "B"):
        return {"tie": "tie", "error": "error"}.get(winner, "unjudged"), None
    if row["p_a"] is None:
        return "no p_a", None
    confidence = row["confidence"]
    if confidence is None:
        confidence = row["p_a"] if winner == "A" else 1.0 - row["p_a"]
    if row["undecided"]:
        return "undecided", confidence
    if confidence < min_confidence:
        return "below min confidence", confidence
    if consistent_only and row["consistent"] is not True:
        return "orders disagree or one order", confidence
    return "", confidence


def select_pairs(verdicts: Verdicts, output: str, min_confidence: float, consistent_only: bool = False,
                 endpoint_url: str | None = None, calibration: Calibration | None = None,
                 decided_only: bool = True) -> dict:
    """Writes the DPO file; returns where, how many pairs were kept and why others were not."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"--min-confidence must be between 0 and 1, not {min_confidence}")
    verdicts.require(("prompt", "response_a", "response_b", "p_a"), "DPO selection")
    out = locate(output, endpoint_url)
    path = out.path if out.path.endswith(".parquet") else f"{out.path.rstrip('/')}/{DEFAULT_NAME}"
    parent = path.rsplit("/", 1)[0]
    if parent:
        out.filesystem.create_dir(parent, recursive=True)
    left_out: Counter = Counter()
    kept = 0
    with out.filesystem.open_output_stream(path) as stream, pq.ParquetWriter(stream, DPO_SCHEMA) as writer:
        for rows in verdicts.batches(_COLUMNS):
            _calibrated(rows, calibration, decided_only)
            chosen: dict[str, list] = {name: [] for name in DPO_SCHEMA.names}
            for values in zip(*rows.values()):
                row = dict(zip(rows, values))
                reason, confidence = _reason(row, min_confidence, consistent_only)
                if reason:
                    left_out[reason] += 1
                    continue
                a_wins = row["winner"] == "A"
                chosen["id"].append(row["id"])
                chosen["prompt"].append(row["prompt"])
                chosen["chosen"].append(row["response_a"] if a_wins else row["response_b"])
                chosen["rejected"].append(row["response_b"] if a_wins else row["response_a"])
                chosen["confidence"].append(confidence)
            kept += len(chosen["id"])
            writer.write_table(pa.table(chosen, schema=DPO_SCHEMA))
    uri = output if output.endswith(".parquet") else f"{output.rstrip('/')}/{DEFAULT_NAME}"
    return {"output": uri, "pairs": kept, "left_out": dict(left_out.most_common())}
