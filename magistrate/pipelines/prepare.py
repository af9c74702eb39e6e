"""Per-batch preparation: standard column names, labels, stable ids, row validation.

A bad row is never dropped: it keeps its place and gets an `_invalid` message, which
the judge actor turns into an error row without sending it to the engine.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from magistrate.schema import VERDICT_FIELDS

INVALID = "_invalid"
_LABELS = {"a": "A", "1": "A", "b": "B", "2": "B", "tie": "tie", "c": "tie", "0": "tie"}


def derived_id(prompt: Any, response_a: Any, response_b: Any) -> str:
    """A stable id from content, for rows that come without one."""
    payload = json.dumps([prompt, response_a, response_b], ensure_ascii=False, sort_keys=True)
    return "sha256-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


def normalise_label(value: Any) -> str | None:
    if value is None:
        return None
    return _LABELS.get(str(value).strip().lower(), str(value))


def row_problem(prompt: Any, response_a: Any, response_b: Any) -> str | None:
    """Why a row cannot be judged, or None."""
    if prompt is None:
        return "prompt is missing"
    if isinstance(prompt, str):
        if not prompt.strip():
            return "prompt is empty"
    elif isinstance(prompt, list):
        if not prompt:
            return "prompt is an empty list of messages"
        for i, message in enumerate(prompt):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                return f"prompt message {i} is not {{role, content}} with string content"
            if message.get("role") not in ("system", "user", "assistant"):
                return f"prompt message {i} has role {message.get('role')!r}"
        if prompt[-1].get("role") != "user":
            return "a multi-turn prompt must end with a user message"
    else:
        return f"prompt is a {type(prompt).__name__}, not a string or a list of messages"
    for name, value in (("response_a", response_a), ("response_b", response_b)):
        if value is None:
            return f"{name} is missing"
        if not isinstance(value, str):
            return f"{name} is a {type(value).__name__}, not a string"
    return None


def prepare_batch(batch: pa.Table, mapping: dict[str, str], preset: str) -> pa.Table:
    """Rename to standard columns, fill ids, normalise labels and mark invalid rows."""
    renames = {source: target for target, source in mapping.items() if source in batch.column_names}
    # Passthrough columns that share a name with a verdict field keep their data under
    # input_<name>, so nothing the user gave is overwritten.
    for name in batch.column_names:
        if name not in renames and name in VERDICT_FIELDS.names:
            renames[name] = f"input_{name}"
    batch = batch.rename_columns([renames.get(c, c) for c in batch.column_names])
    n = batch.num_rows

    def column(name: str) -> list:
        return batch.column(name).to_pylist() if name in batch.column_names else [None] * n

    prompts, resp_a, resp_b = column("prompt"), column("response_a"), column("response_b")
    ids = column("id")
    ids = [
        str(i) if i is not None and str(i) != "" else derived_id(p, a, b)
        for i, p, a, b in zip(ids, prompts, resp_a, resp_b)
    ]
    problems = [row_problem(p, a, b) for p, a, b in zip(prompts, resp_a, resp_b)]

    batch = _set(batch, "id", pa.array(ids, pa.string()))
    if preset == "rewardbench" and "label" not in batch.column_names:
        # RewardBench rows are (chosen, rejected): the chosen one is A.
        batch = _set(batch, "label", pa.array(["A"] * n, pa.string()))
    elif "label" in batch.column_names:
        batch = _set(batch, "label", pa.array([normalise_label(v) for v in column("label")], pa.string()))
    return _set(batch, INVALID, pa.array(problems, pa.string()))


def _set(table: pa.Table, name: str, values) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)
