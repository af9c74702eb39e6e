"""The data contracts, as Arrow schemas: what a verdict row holds (docs/output-schema.md)."""

from __future__ import annotations

import pyarrow as pa

from magistrate.judges.combine import ORDERS

STANDARD_INPUT = ("id", "prompt", "response_a", "response_b")
OPTIONAL_INPUT = ("label", "subset", "model_a", "model_b")

_PER_ORDER = [
    ("verdict", pa.string()),
    ("p_a", pa.float64()),
    ("rationale", pa.string()),
    ("raw", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("error", pa.string()),
]

VERDICT_FIELDS = pa.schema(
    [
        ("winner", pa.string()),  # A | B | tie | error
        ("p_a", pa.float64()),  # P(A is better), null on error
        ("consistent", pa.bool_()),  # both orders agree; null with one order
        ("error", pa.string()),
        ("injection_suspect", pa.bool_()),
        ("written_off", pa.bool_()),  # failed for infrastructure reasons; --resume judges it again
        *[(f"{order}_{name}", kind) for order in ORDERS for name, kind in _PER_ORDER],
        ("judge", pa.string()),
        ("judge_version", pa.int64()),
        ("mode", pa.string()),
        ("order", pa.string()),
        ("model", pa.string()),
        ("run_id", pa.string()),
    ]
)


def verdict_table(rows: list[dict], constants: dict) -> pa.Table:
    """Verdict rows plus per-run constants, in the fixed schema."""
    columns = {}
    for field in VERDICT_FIELDS:
        if field.name in constants:
            columns[field.name] = pa.array([constants[field.name]] * len(rows), field.type)
        else:
            columns[field.name] = pa.array([r.get(field.name) for r in rows], field.type)
    return pa.table(columns, schema=VERDICT_FIELDS)
