"""The data contracts, as Arrow schemas: what a verdict row holds (docs/output-schema.md)."""

from __future__ import annotations

import pyarrow as pa

from magistrate.judges.combine import ORDERS, PER_ORDER_FIELDS
from magistrate.judges.core import JudgeSettings
from magistrate.pairs import INVALID

STANDARD_INPUT = ("id", "prompt", "response_a", "response_b")
OPTIONAL_INPUT = ("label", "subset", "model_a", "model_b")
# A conversation as typed messages: a verdict row's `prompt_messages`, and the prompt,
# chosen and rejected of a conversational DPO file (analysis/select.py).
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))

_PER_ORDER_TYPES = {"verdict": pa.string(), "p_a": pa.float64(), "rationale": pa.string(), "raw": pa.string(),
                    "prompt_tokens": pa.int64(), "completion_tokens": pa.int64(), "error": pa.string(),
                    "label_mass": pa.float64(), "p_source": pa.string()}

VERDICT_FIELDS = pa.schema(
    [
        ("winner", pa.string()),  # A | B | tie | error
        ("p_a", pa.float64()),  # P(A is better), null on error
        ("consistent", pa.bool_()),  # both orders agree; null with one order
        ("error", pa.string()),
        ("injection_suspect", pa.bool_()),
        ("written_off", pa.bool_()),  # failed for infrastructure reasons; --resume judges it again
        *[(f"{order}_{name}", _PER_ORDER_TYPES[name]) for order in ORDERS for name in PER_ORDER_FIELDS],
        ("judge", pa.string()),
        ("judge_version", pa.int64()),
        ("mode", pa.string()),
        ("order", pa.string()),
        ("model", pa.string()),
        ("run_id", pa.string()),
    ]
)


# Added after the verdict columns where a calibration is applied (--calibration FILE;
# judges/calibration.py computes them, docs/calibration.md).
CALIBRATED_FIELDS = pa.schema([("p_a_calibrated", pa.float64()), ("confidence", pa.float64()),
                               ("decided", pa.bool_())])


RUN_CONSTANTS = ("judge", "judge_version", "mode", "order", "model", "run_id")


def run_constants(judge: JudgeSettings, model: str, run_id: str | None = None,
                  dry_run: bool = False) -> dict:
    """What every row of a run (or answer of an endpoint, which has no run id) says about
    how it was judged: the one definition batch, the written-off path and Serve use."""
    judge = judge.resolved()
    constants = {"judge": judge.profile.name, "judge_version": judge.profile.version,
                 "mode": "dry-run" if dry_run else judge.mode, "order": judge.order, "model": model}
    return constants if run_id is None else {**constants, "run_id": run_id}


def verdict_schema(calibrated: bool = False) -> pa.Schema:
    """The verdict columns of a run, with the calibrated ones where it applies a calibration."""
    return pa.schema([*VERDICT_FIELDS, *CALIBRATED_FIELDS]) if calibrated else VERDICT_FIELDS


def with_verdicts(pairs: pa.Table, rows: list[dict], constants: dict, calibrated: bool = False) -> pa.Table:
    """The prepared pairs (their `_invalid` column dropped) with the verdict columns."""
    table = pairs.drop_columns([c for c in (INVALID,) if c in pairs.column_names])
    verdicts = verdict_table(rows, constants, calibrated)
    for field in verdicts.schema:
        table = table.append_column(field, verdicts.column(field.name))
    return table


def verdict_table(rows: list[dict], constants: dict, calibrated: bool = False) -> pa.Table:
    """Verdict rows plus per-run constants, in the fixed schema (a row without a column's
    value, e.g. a written-off row's calibrated ones, has null there)."""
    schema = verdict_schema(calibrated)
    columns = {}
    for field in schema:
        if field.name in constants:
            columns[field.name] = pa.array([constants[field.name]] * len(rows), field.type)
        else:
            columns[field.name] = pa.array([r.get(field.name) for r in rows], field.type)
    return pa.table(columns, schema=schema)
