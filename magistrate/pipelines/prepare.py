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
        return f"prompt is not a string or a list of messages (got {type(prompt).__name__})"
    for name, value in (("response_a", response_a), ("response_b", response_b)):
        if value is None:
            return f"{name} is missing"
        if not isinstance(value, str):
            return f"{name} is not a string (got {type(value).__name__})"
    return None


MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
# Standard columns this step builds itself; everything else passes through.
_BUILT = ("id", "prompt", "response_a", "response_b", "label")


def parse_lines(lines: list[str]) -> tuple[list[dict], list[str | None]]:
    """JSON lines -> records. A line that is not a JSON object becomes an empty record
    with a problem, so it is reported as an error row rather than failing the job."""
    records, problems = [], []
    for number, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            records.append({})
            problems.append(f"line {number + 1} of its block is not valid JSON ({exc.msg} at "
                            f"column {exc.colno}): {line[:200]!r}")
            continue
        if not isinstance(record, dict):
            records.append({})
            problems.append(f"line {number + 1} of its block is a JSON {type(record).__name__}, "
                            f"not an object: {line[:200]!r}")
            continue
        records.append(record)
        problems.append(None)
    return records, problems


def _column_from_values(values: list) -> pa.Array:
    """Typed where the values agree; JSON text where they do not (mixed types in a
    passthrough column must not fail the job)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values],
                        pa.string())


def _text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def prepare_batch(batch: pa.Table, mapping: dict[str, str], preset: str,
                  json_lines: bool = False) -> pa.Table:
    """Standard columns, stable ids, normalised labels, and `_invalid` per row.

    `prompt` is always text (a multi-turn prompt as its JSON); `prompt_messages` holds a
    multi-turn prompt as typed messages, null otherwise."""
    source = {target: mapping.get(target, target) for target in _BUILT}
    source_names = set(source.values())
    if json_lines:
        records, parse_problems = parse_lines(batch.column("text").to_pylist())
        keys = list(dict.fromkeys(k for r in records for k in r if k not in source_names))
        passthrough = {k: _column_from_values([r.get(k) for r in records]) for k in keys}
    else:
        records = batch.select([c for c in batch.column_names if c in source_names]).to_pylist()
        parse_problems = [None] * batch.num_rows
        passthrough = {c: batch.column(c) for c in batch.column_names if c not in source_names}

    ids, prompts, messages, resp_a, resp_b, problems = [], [], [], [], [], []
    for record, parse_problem in zip(records, parse_problems):
        prompt = record.get(source["prompt"])
        a, b = record.get(source["response_a"]), record.get(source["response_b"])
        given = record.get(source["id"])
        ids.append(str(given) if given not in (None, "") else derived_id(
            prompt if parse_problem is None else parse_problem, a, b))
        problem = parse_problem or row_problem(prompt, a, b)
        problems.append(problem)
        prompts.append(_text(prompt))
        messages.append(prompt if isinstance(prompt, list) and problem is None else None)
        resp_a.append(_text(a))
        resp_b.append(_text(b))

    columns: dict[str, pa.Array] = {
        "id": pa.array(ids, pa.string()),
        "prompt": pa.array(prompts, pa.string()),
        "prompt_messages": pa.array(messages, MESSAGES),
        "response_a": pa.array(resp_a, pa.string()),
        "response_b": pa.array(resp_b, pa.string()),
    }
    if any(source["label"] in r for r in records):
        columns["label"] = pa.array([normalise_label(r.get(source["label"])) for r in records], pa.string())
    elif preset == "rewardbench":
        # RewardBench rows are (chosen, rejected): the chosen one is A.
        columns["label"] = pa.array(["A"] * len(records), pa.string())
    renames = {src: target for target, src in mapping.items() if target not in _BUILT}
    for name, values in passthrough.items():
        name = renames.get(name, name)
        # A passthrough column named like a verdict field keeps its data as input_<name>.
        if name in VERDICT_FIELDS.names or name in columns:
            name = f"input_{name}"
        columns[name] = values
    columns[INVALID] = pa.array(problems, pa.string())
    return pa.table(columns)
