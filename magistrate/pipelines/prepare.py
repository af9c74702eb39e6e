"""Per-batch preparation: standard column names, labels, stable ids, row validation.

A bad row is never dropped: it keeps its place and gets an `_invalid` message, which
the judge actor turns into an error row without sending it to the engine.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from typing import Any

import pyarrow as pa

from magistrate.schema import VERDICT_FIELDS

INVALID = "_invalid"
# Fields longer than this are refused before rendering or tokenising: no judge's context
# holds a million characters, and tokenising a 50 MB field first would take minutes.
MAX_FIELD_CHARS = 1_000_000
MAX_MESSAGES = 1_000
_LABELS = {"a": "A", "1": "A", "1.0": "A", "model_a": "A",
           "b": "B", "2": "B", "2.0": "B", "model_b": "B",
           "tie": "tie", "c": "tie", "0": "tie", "0.0": "tie", "tie (bothbad)": "tie"}


def derived_id(prompt: Any, response_a: Any, response_b: Any) -> str:
    """A stable id from content, for rows that come without one."""
    values = [prompt, response_a, response_b]
    try:
        payload = json.dumps(values, ensure_ascii=False, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        # Bytes, decimals, dates, lone surrogates: only rows that cannot be judged hold
        # them, and they still need an id of their own.
        payload = json.dumps(values, ensure_ascii=True, sort_keys=True, default=str).encode("utf-8")
    return "sha256-" + hashlib.sha256(payload).hexdigest()[:20]


def _missing(value: Any) -> bool:
    """None, an empty string, or NaN (pandas writes missing values as NaN)."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def normalise_label(value: Any) -> tuple[str | None, str | None]:
    """(A | B | tie | None, None), or (None, why the label is not understood)."""
    if _missing(value):
        return None, None
    label = _LABELS.get(str(value).strip().lower())
    if label is None:
        return None, (f"label is not understood ({safe_text(str(value))[:50]!r}): give A, B or tie "
                      "(or 1/2, model_a/model_b), or leave it empty")
    return label, None


def as_text(name: str, value: Any, max_chars: int = MAX_FIELD_CHARS) -> tuple[str | None, str | None]:
    """(the value as text, None), or (None, why it is not usable text, naming the field)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, f"{name} is missing"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"{name} is bytes that are not UTF-8 (byte 0x{value[exc.start]:02x} at {exc.start + 1})"
    if not isinstance(value, str):
        return None, f"{name} is not text (got {type(value).__name__})"
    if len(value) > max_chars:
        return None, f"{name} is {len(value):,} characters, over the limit of {max_chars:,} (--max-field-chars)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return None, (f"{name} holds a lone surrogate (U+{ord(value[exc.start]):04X}) at character "
                      f"{exc.start + 1}: not valid Unicode")
    return value, None


def safe_text(value: Any) -> str | None:
    """Any value as text Arrow can hold, for the output of a row that could not be judged:
    invalid Unicode escaped, not dropped."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def row_problem(prompt: Any, response_a: Any, response_b: Any, max_chars: int = MAX_FIELD_CHARS,
                max_messages: int = MAX_MESSAGES) -> str | None:
    """Why a row cannot be judged, or None."""
    if isinstance(prompt, list):
        if not prompt:
            return "prompt is an empty list of messages"
        if len(prompt) > max_messages:
            return f"prompt has {len(prompt):,} messages, over the limit of {max_messages:,}"
        total = 0
        for i, message in enumerate(prompt):
            if not isinstance(message, dict):
                return f"prompt message {i} is not {{role, content}}"
            content = message.get("content")
            if content is None or not isinstance(content, str):
                return f"prompt message {i} is not {{role, content}} with string content"
            _, problem = as_text(f"prompt message {i} content", content, max_chars)
            if problem:
                return problem
            total += len(content)
            if message.get("role") not in ("system", "user", "assistant"):
                return f"prompt message {i} has role {safe_text(message.get('role'))!r}"
        if total > max_chars:
            return f"prompt is {total:,} characters over its messages, over the limit of {max_chars:,} (--max-field-chars)"
        if prompt[-1].get("role") != "user":
            return "a multi-turn prompt must end with a user message"
    elif isinstance(prompt, (str, bytes)) or prompt is None or isinstance(prompt, float):
        text, problem = as_text("prompt", prompt, max_chars)
        if problem:
            return problem
        if not text.strip():
            return "prompt is empty"
    else:
        return f"prompt is not a string or a list of messages (got {type(prompt).__name__})"
    for name, value in (("response_a", response_a), ("response_b", response_b)):
        _, problem = as_text(name, value, max_chars)
        if problem:
            return problem
    return None


MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
# Standard columns this step builds itself; everything else passes through.
_BUILT = ("id", "prompt", "response_a", "response_b", "label")
_DEPTH = 200  # JSON nested deeper than this is refused (Python's parser overflows near 1000)


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        twice = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise _DuplicateKey(twice)
    return record


def _depth(value: Any, limit: int = _DEPTH) -> int:
    """Nesting depth of a parsed JSON value, counted up to limit + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_line(text: str) -> tuple[dict, str | None]:
    """A JSON line -> (record, None), or ({}, the problem): never an exception."""
    try:
        record = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        return {}, f"key {str(exc)[:80]!r} appears more than once in this JSON object; keep one"
    except RecursionError:
        return {}, f"JSON nested too deeply (more than {_DEPTH} levels)"
    except json.JSONDecodeError as exc:
        return {}, f"not valid JSON ({exc.msg} at column {exc.colno}): {safe_text(text[:200])!r}"
    if not isinstance(record, dict):
        return {}, f"a JSON {type(record).__name__}, not an object: {safe_text(text[:200])!r}"
    if _depth(record) > _DEPTH:
        return {}, f"JSON nested too deeply (more than {_DEPTH} levels)"
    return record, None


def _json_text(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return json.dumps(value, default=str)  # a lone surrogate, kept as its escape


def _column_from_values(values: list) -> pa.Array:
    """Typed where Arrow can hold the values; their JSON text where it cannot (mixed types,
    integers past int64, invalid Unicode): a passthrough column never fails a unit."""
    try:
        return pa.array(values)
    except (pa.ArrowException, OverflowError, UnicodeEncodeError, RecursionError, TypeError):
        return pa.array([None if v is None else _json_text(v) for v in values], pa.string())


def _row_id(given: Any) -> tuple[str | None, str | None]:
    """The row's own id as text, or (None, None) when it has none (NaN counts as none)."""
    if _missing(given):
        return None, None
    return as_text("id", given if isinstance(given, (str, bytes)) else str(given), 10_000)


def prepare_batch(batch: pa.Table, mapping: dict[str, str], preset: str, json_lines: bool = False,
                  max_chars: int = MAX_FIELD_CHARS) -> pa.Table:
    """Standard columns, stable ids, normalised labels, and `_invalid` per row (naming the
    row's place in its file, when the reader gave one: pipelines/reading.py).

    `prompt` is always text (a multi-turn prompt as its JSON); `prompt_messages` holds a
    multi-turn prompt as typed messages, null otherwise."""
    from magistrate.pipelines.reading import READ_PROBLEM, TEXT, WHERE

    source = {target: mapping.get(target, target) for target in _BUILT}
    source_names = set(source.values())
    n = batch.num_rows
    wheres = batch.column(WHERE).to_pylist() if WHERE in batch.column_names else [None] * n
    read_problems = batch.column(READ_PROBLEM).to_pylist() if READ_PROBLEM in batch.column_names else [None] * n
    reader_columns = {WHERE, READ_PROBLEM, TEXT if json_lines else None}
    if json_lines:
        records, parse_problems = [], []
        for text, read_problem in zip(batch.column(TEXT).to_pylist(), read_problems):
            record, problem = ({}, read_problem) if read_problem else parse_line(text)
            records.append(record)
            parse_problems.append(problem)
        keys = list(dict.fromkeys(k for r in records for k in r if k not in source_names))
        passthrough = {k: _column_from_values([r.get(k) for r in records]) for k in keys}
    else:
        records = batch.select([c for c in batch.column_names if c in source_names]).to_pylist()
        parse_problems = read_problems
        passthrough = {c: batch.column(c) for c in batch.column_names
                       if c not in source_names and c not in reader_columns}

    ids, prompts, messages, resp_a, resp_b, labels, problems = [], [], [], [], [], [], []
    for record, parse_problem, where in zip(records, parse_problems, wheres):
        prompt = record.get(source["prompt"])
        a, b = record.get(source["response_a"]), record.get(source["response_b"])
        label, label_problem = normalise_label(record.get(source["label"]))
        given_id, id_problem = _row_id(record.get(source["id"]))
        ids.append(given_id or derived_id(
            prompt if parse_problem is None else f"{where}: {parse_problem}", a, b))
        problem = parse_problem or id_problem or row_problem(prompt, a, b, max_chars) or label_problem
        problems.append(f"{where}: {problem}" if problem and where else problem)
        labels.append(label)
        # A judgeable row's text fields are valid text already (a binary column's are
        # bytes, decoded here); any other row keeps whatever it held as text.
        prompts.append(prompt if isinstance(prompt, str) and problem is None else safe_text(prompt))
        messages.append(prompt if isinstance(prompt, list) and problem is None else None)
        resp_a.append(a if isinstance(a, str) and problem is None else safe_text(a))
        resp_b.append(b if isinstance(b, str) and problem is None else safe_text(b))

    columns: dict[str, pa.Array] = {
        "id": pa.array(ids, pa.string()),
        "prompt": pa.array(prompts, pa.string()),
        "prompt_messages": pa.array(messages, MESSAGES),
        "response_a": pa.array(resp_a, pa.string()),
        "response_b": pa.array(resp_b, pa.string()),
    }
    if any(source["label"] in r for r in records):
        columns["label"] = pa.array(labels, pa.string())
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
