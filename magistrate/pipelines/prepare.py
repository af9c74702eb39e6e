"""Prepared pairs: a unit's rows read (pipelines/reading.py), put under the standard column
names, given labels and stable ids, and checked (magistrate/pairs.py). The one way every
command gets its pairs: `judge` (each unit, on the actors), the duplicate-id pass,
`render` and `estimate`.

A bad row is never dropped: it keeps its place and gets an `_invalid` message, which
the judge host turns into an error row without sending it to the engine.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any, Iterator

import pyarrow as pa

from magistrate.pairs import (
    INVALID,
    MAX_FIELD_CHARS,
    PROMPT_MESSAGES,
    is_missing,
    as_text,
    derived_id,
    normalise_label,
    parse_line,
    place_id,
    row_problem,
    safe_text,
)
from magistrate.pipelines.reading import Rows, peek_columns, read_unit
from magistrate.pipelines.sources import Location, list_input_files, locate, resolve_mapping
from magistrate.pipelines.sharding import shard
from magistrate.pipelines.units import UNIT_ROWS, Unit
from magistrate.schema import MESSAGES, verdict_schema

# Standard columns this step builds itself; everything else passes through.
_BUILT = ("id", "prompt", "response_a", "response_b", "label")
# Output column names: a passthrough input column of one of these names is renamed.
_VERDICT_NAMES = frozenset(verdict_schema(calibrated=True).names)


def _json_text(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return json.dumps(value, default=str)  # a lone surrogate, kept as its escape


def _column_from_values(values: list) -> pa.Array:
    """Typed where Arrow and Parquet can hold the values; their JSON text where they cannot
    (mixed types, integers past int64, invalid Unicode, an empty object `{}`, which Parquet
    cannot write as a struct with no fields): a passthrough column never fails a unit."""
    try:
        column = pa.array(values)
        if _parquet_holds(column.type):
            return column
    except (pa.ArrowException, OverflowError, UnicodeEncodeError, RecursionError, TypeError):
        pass
    return pa.array([None if v is None else _json_text(v) for v in values], pa.string())


def _parquet_holds(type_: pa.DataType) -> bool:
    """False for a type with a struct of no fields anywhere inside (`{}`, `[{}]`, `{"a": {}}`)."""
    if pa.types.is_struct(type_):
        return type_.num_fields > 0 and all(_parquet_holds(f.type) for f in type_)
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return _parquet_holds(type_.value_type)
    return True


def _row_id(given: Any) -> tuple[str | None, str | None]:
    """The row's own id as text, or (None, None) when it has none (NaN counts as none)."""
    if is_missing(given):
        return None, None
    return as_text("id", given if isinstance(given, (str, bytes)) else str(given), 10_000)


def prepare_batch(rows: Rows, mapping: dict[str, str], preset: str,
                  max_chars: int = MAX_FIELD_CHARS) -> pa.Table:
    """Standard columns, stable ids, normalised labels, and `_invalid` per row (naming the
    row's place in its file: pipelines/reading.py).

    `prompt` is always text (a multi-turn prompt as its JSON); `prompt_messages` holds a
    multi-turn prompt as typed messages, null otherwise."""
    source = {target: mapping.get(target, target) for target in _BUILT}
    source_names = set(source.values())
    if rows.lines is not None:  # a JSONL unit comes as its lines
        records, parse_problems = [], []
        for text, read_problem in zip(rows.lines, rows.problems):
            record, problem = ({}, read_problem) if read_problem else parse_line(text)
            records.append(record)
            parse_problems.append(problem)
        keys = list(dict.fromkeys(k for r in records for k in r if k not in source_names))
        passthrough = {k: _column_from_values([r.get(k) for r in records]) for k in keys}
    else:
        batch = rows.columns
        records = batch.select([c for c in batch.column_names if c in source_names]).to_pylist()
        parse_problems = rows.problems
        passthrough = {c: batch.column(c) for c in batch.column_names if c not in source_names}

    ids, prompts, messages, resp_a, resp_b, labels, problems = [], [], [], [], [], [], []
    for record, parse_problem, where in zip(records, parse_problems, rows.wheres):
        prompt = record.get(source["prompt"])
        a, b = record.get(source["response_a"]), record.get(source["response_b"])
        label, label_problem = normalise_label(record.get(source["label"]))
        given_id, id_problem = _row_id(record.get(source["id"]))
        problem = parse_problem or id_problem or row_problem(prompt, a, b, max_chars) or label_problem
        # A row that cannot be judged is told apart by its place, not its content.
        ids.append(given_id or (place_id(rows.path, where) if problem else derived_id(prompt, a, b)))
        problems.append(f"{where}: {problem}" if problem else problem)
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
        PROMPT_MESSAGES: pa.array(messages, MESSAGES),
        "response_a": pa.array(resp_a, pa.string()),
        "response_b": pa.array(resp_b, pa.string()),
    }
    if any(source["label"] in r for r in records):
        columns["label"] = pa.array(labels, pa.string())
    elif preset == "rewardbench":
        # RewardBench rows are (chosen, rejected): the chosen one is A.
        columns["label"] = pa.array(["A"] * len(records), pa.string())
    renames = {src: target for target, src in mapping.items() if target not in _BUILT}
    taken = set(columns) | {renames.get(n, n) for n in passthrough} | _VERDICT_NAMES | {INVALID}
    for name, values in passthrough.items():
        name = renames.get(name, name)
        # A passthrough column named like a verdict field or one this step builds keeps its
        # data as input_<name> (input_input_<name> if the input has an input_<name> too:
        # an output fed back in keeps both).
        if name in _VERDICT_NAMES or name in columns or name == INVALID:
            while name in taken:
                name = f"input_{name}"
            taken.add(name)
        columns[name] = values
    columns[INVALID] = pa.array(problems, pa.string())
    return pa.table(columns)


def prepare_unit(src: Location, unit: Unit, mapping: dict, preset: str,
                 max_chars: int = MAX_FIELD_CHARS, staging: Location | None = None) -> pa.Table:
    """A unit's prepared pairs, in input order (`staging`: the output, where a staged
    unit's copy is: pipelines/sharding.py)."""
    table = prepare_batch(read_unit(src, unit, staging, max_chars), mapping, preset, max_chars=max_chars)
    return table.slice(0, unit.max_rows) if unit.max_rows >= 0 else table


def read_prepared(uri: str, fmt: str = "auto", columns: str | None = None,
                  endpoint_url: str | None = None, limit: int | None = None,
                  max_chars: int = MAX_FIELD_CHARS, unit_rows: int = UNIT_ROWS) -> Iterator[dict]:
    """Prepared pairs as dicts, in input order, in this process and without Ray (`render`,
    `estimate`): cut into the units `judge` cuts (staged pieces in a temporary folder),
    read one unit at a time, so a large input is streamed."""
    loc = locate(uri, endpoint_url)
    files = list_input_files(loc)
    mapping, preset = resolve_mapping(peek_columns(loc.filesystem, files), fmt, columns, uri)
    seen = 0
    with tempfile.TemporaryDirectory(prefix="magistrate-staged-") as tmp:
        staging = locate(tmp)
        for unit in shard(loc, files, unit_rows, staging):
            for row in prepare_unit(loc, unit, mapping, preset, max_chars, staging).to_pylist():
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield row
