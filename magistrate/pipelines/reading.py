"""Reading input files: the one way every command reads pairs.

`magistrate judge` (each unit, on the actors), the duplicate-id pass, `render` and
`estimate` read through `read_unit`, so a file gives the same rows and the same problems
whichever command reads it; pipelines/prepare.py then validates every row the same way
(the Serve bodies too).

- JSONL lines end at `\\n`, `\\r\\n` or a lone `\\r`. A raw CR cannot occur inside a JSON
  string, so splitting there never cuts a valid record, and a file saved with CR-only line
  endings keeps every record. U+2028, U+2029 and NEL are not line ends (JSON allows them
  inside strings). A UTF-8 byte order mark at the start of a file is skipped.
- Nothing is decoded leniently: a line that is not UTF-8 is an error row naming the byte.
- CSV columns are read as text, as written: no type inference turns an answer `4,5` or
  `007` into a number. A row with the wrong number of fields is an error row in its place.
- A text value (CSV, a Parquet string column) that is not UTF-8 is an error row naming
  its column: Parquet does not check the bytes, and Arrow's CSV reader would stop.
- A whole-file problem found when planning (a Parquet footer that cannot be read, duplicate
  column names) is a refusal naming the file (`check_file`); a row group that cannot be
  read while judging (a corrupt data page) becomes error rows for exactly its rows.

Every record comes with its place (`line 3 of pairs.jsonl`, `row 7 of pairs.parquet`) and
why it could not be read, or None (`Rows`); prepare.py turns both into the error.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from magistrate.pairs import decode_line, safe_text
from magistrate.pipelines.sources import InputError, format_of

if TYPE_CHECKING:
    from magistrate.pipelines.units import Unit

_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Rows:
    """A unit's records as read, before any checking. The file's own columns keep their own
    names, and the reader's facts about each record (its place, why it could not be read)
    travel beside them, not as columns: no input column (`_where`, `text`) can collide with
    them or be taken for them."""

    path: str  # the file, as its filesystem names it
    columns: pa.Table | None  # CSV and Parquet: the file's columns (a JSONL unit: None)
    lines: list[str | None] | None  # JSONL: each record's line (None where not UTF-8); else None
    wheres: list[str]  # each record's place: `line 3 of pairs.jsonl`, `row 7 of pairs.parquet`
    problems: list[str | None]  # why each record could not be read, or None

    @property
    def num_rows(self) -> int:
        return len(self.wheres)


class _Bytes:
    """Sequential reads from `pos` on, keeping only the unread tail in memory."""

    def __init__(self, f, pos: int):
        f.seek(pos)
        self.f, self.base, self.buf, self.eof = f, pos, bytearray(), False

    def _more(self) -> bool:
        data = self.f.read(_CHUNK)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def line(self, pos: int) -> tuple[bytes | None, int]:
        """The line starting at `pos` (without its end) and where the next one starts;
        None at the end of the file."""
        del self.buf[: pos - self.base]
        self.base, scan = pos, 0
        while True:
            ends = [i for i in (self.buf.find(b"\n", scan), self.buf.find(b"\r", scan)) if i >= 0]
            if ends:
                end = min(ends)
                if self.buf[end] == 13 and end + 1 == len(self.buf) and not self.eof and self._more():
                    scan = end  # a CR at the end of what was read: is an LF next?
                    continue
                after = end + 2 if self.buf[end:end + 2] == b"\r\n" else end + 1
                return bytes(self.buf[:end]), self.base + after
            scan = len(self.buf)
            if not self._more():
                return (bytes(self.buf), self.base + len(self.buf)) if self.buf else (None, pos)


def iter_lines(f, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(offset, line) for every line that starts at a byte in [start, stop): each line
    belongs to exactly one range, wherever the range boundaries fall."""
    reader = _Bytes(f, max(start - 1, 0))
    pos = start
    if start > 0:  # the line running across the boundary belongs to the range before
        _, pos = reader.line(start - 1)
    while stop is None or pos < stop:
        line, after = reader.line(pos)
        if line is None:
            return
        yield pos, (line[len(_BOM):] if pos == 0 and line.startswith(_BOM) else line)
        pos = after


def _json_unit(fs: pafs.FileSystem, unit: "Unit") -> Rows:
    name = os.path.basename(unit.path)
    texts, wheres, problems = [], [], []
    with fs.open_input_file(unit.path) as f:
        for number, (offset, line) in enumerate(iter_lines(f, unit.start, unit.stop), start=1):
            if not line.strip():
                continue
            text, problem = decode_line(line)
            texts.append(text)
            problems.append(problem)
            # Line numbers are known only counting from the file's start.
            wheres.append(f"line {number} of {name}" if unit.start == 0 else f"the line at byte {offset} of {name}")
    return Rows(unit.path, None, texts, wheres, problems)


def _parquet_unit(fs: pafs.FileSystem, unit: "Unit") -> Rows:
    name = os.path.basename(unit.path)
    parts, problems = [], []
    with fs.open_input_file(unit.path) as f:
        parquet = pq.ParquetFile(f)
        meta = parquet.metadata
        first = sum(meta.row_group(g).num_rows for g in range(unit.start))
        for group in range(unit.start, unit.stop):
            rows = meta.row_group(group).num_rows
            try:
                table, bad = _utf8_checked(parquet.read_row_group(group), _is_string)
            except (OSError, pa.ArrowException) as exc:
                # Its rows stay, all null, so every one becomes an error row in its place.
                table = pa.table({f.name: pa.nulls(rows, f.type) for f in parquet.schema_arrow})
                bad = [f"row group {group} could not be read ({str(exc)[:200]})"] * rows
            parts.append(table)
            problems += bad
        wheres = [f"row {first + i + 1} of {name}" for i in range(len(problems))]
    table = pa.concat_tables(parts) if parts else parquet.schema_arrow.empty_table()
    return Rows(unit.path, table, None, wheres, problems)


def _is_string(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def _utf8_checked(table: pa.Table, is_text: Callable) -> tuple[pa.Table, list[str | None]]:
    """The table with its text columns (those `is_text` picks) as strings, and per row why it
    cannot be read: a value whose bytes are not UTF-8 (Parquet does not check them; CSV
    columns are read as bytes for this). Nothing is replaced silently: such a row is an error
    row naming the column and the byte, and its values are kept escaped, as every error row's
    are (pairs.safe_text)."""
    problems: list[str | None] = [None] * table.num_rows
    for i, field in enumerate(table.schema):
        if not is_text(field.type):
            continue
        large = pa.types.is_large_string(field.type) or pa.types.is_large_binary(field.type)
        raw = table.column(i).cast(pa.large_binary() if large else pa.binary())  # a view: no check
        target = pa.large_string() if large else pa.string()
        try:
            text = raw.cast(target)  # checks the bytes
        except pa.ArrowInvalid:  # rare: find the rows, value by value
            values = []
            for row, value in enumerate(raw.to_pylist()):
                try:
                    values.append(None if value is None else value.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    problems[row] = problems[row] or (
                        f"column {safe_text(field.name)!r} is not valid UTF-8 (byte 0x{value[exc.start]:02x} "
                        f"at byte {exc.start + 1} of the value); save the file as UTF-8")
                    values.append(value.decode("utf-8", "backslashreplace"))
            text = pa.array(values, target)
        table = table.set_column(i, pa.field(field.name, target), text)
    return table, problems


def _csv_unit(fs: pafs.FileSystem, unit: "Unit") -> Rows:
    with fs.open_input_file(unit.path) as f:
        return read_csv_as_text(f, unit.path)


def read_csv_as_text(f, path: str) -> Rows:
    """Every column as text; an empty file is no rows. A row with the wrong number of
    fields is an error row in its place (Arrow's reader would stop the whole file there),
    and a value that is not UTF-8 an error row naming its column."""
    names = csv_header(f)
    if not names:
        return Rows(path, pa.table({}), None, [], [])
    ragged: dict[int, str] = {}  # record index -> why

    def keep_count(row) -> str:
        # use_threads=False: only then does Arrow number the rows (the header is row 1).
        index = row.number - 2 if row.number is not None else (1 << 40) + len(ragged)  # else last
        ragged[index] = (f"the row has {row.actual_columns} fields, the header {row.expected_columns} "
                         f"({safe_text(row.text[:100])!r})")
        return "skip"

    f.seek(0)
    table = pcsv.read_csv(f, read_options=pcsv.ReadOptions(use_threads=False),
                          parse_options=pcsv.ParseOptions(invalid_row_handler=keep_count),
                          convert_options=pcsv.ConvertOptions(
                              column_types={n: pa.binary() for n in names}, strings_can_be_null=False))
    table, problems = _utf8_checked(table, pa.types.is_binary)
    table, problems = _with_ragged(table, problems, ragged)
    name = os.path.basename(path)
    return Rows(path, table, None, [f"row {i + 1} of {name}" for i in range(table.num_rows)], problems)


def _with_ragged(table: pa.Table, problems: list, ragged: dict[int, str]) -> tuple[pa.Table, list]:
    """The rows the CSV reader skipped put back in their places, all null, with their problem."""
    if not ragged:
        return table, problems
    nulls = pa.table({f.name: pa.nulls(1, f.type) for f in table.schema})
    parts, merged, kept = [], [], 0
    for index in sorted(ragged):
        take = max(0, min(index - len(merged), table.num_rows - kept))  # good rows before it
        parts += [table.slice(kept, take), nulls]
        merged += problems[kept:kept + take] + [ragged[index]]
        kept += take
    parts.append(table.slice(kept))
    merged += problems[kept:]
    return pa.concat_tables(parts), merged


def csv_header(f) -> list[str]:
    f.seek(0)
    try:
        # Ragged rows in the first block are read_csv_as_text's to tell, row by row.
        return pcsv.open_csv(f, parse_options=pcsv.ParseOptions(invalid_row_handler=lambda row: "skip")).schema.names
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return []
        raise


def _parquet_spans(fs: pafs.FileSystem, path: str, unit_rows: int) -> list[tuple[int, int, int]]:
    """Runs of whole row groups of about unit_rows rows."""
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    spans, start, rows = [], 0, 0
    for group in range(meta.num_row_groups):
        rows += meta.row_group(group).num_rows
        if rows >= unit_rows or group == meta.num_row_groups - 1:
            spans.append((start, group + 1, rows))
            start, rows = group + 1, 0
    return spans


def _json_spans(fs: pafs.FileSystem, path: str, unit_rows: int) -> list[tuple[int, int, int]]:
    """Byte ranges of about unit_rows lines (a line belongs to the range it starts in),
    sized from the line length of the first MiB; their row counts are estimates."""
    size = fs.get_file_info(path).size
    with fs.open_input_stream(path) as f:
        head = f.read(1 << 20)
    # A CR-only file has no LF; iter_lines splits at CR.
    lines = max(1, head.count(b"\n") or head.count(b"\r"))
    per_unit = max(1 << 16, int(len(head) / lines * unit_rows))
    return [(start, min(size, start + per_unit), round((min(size, start + per_unit) - start) * lines / max(1, len(head))))
            for start in range(0, max(size, 1), per_unit)]


def _json_keys(f, lines: int = 100) -> list[str]:
    """The keys of a JSONL file's first records, each line read whole however long."""
    keys: dict[str, None] = {}
    seen = 0
    for _, line in iter_lines(f):
        text, _ = decode_line(line)
        if not text or not text.strip():
            continue
        seen += 1
        try:
            record = json.loads(text)
        except (ValueError, RecursionError):
            record = None
        if isinstance(record, dict):
            keys.update(dict.fromkeys(record))
        if seen >= lines:
            break
    return list(keys)


@dataclass(frozen=True)
class FileFormat:
    """How one input format is read: the only place that knows the formats apart."""

    name: str
    columns: Callable  # open file -> its column names (JSONL: its first records' keys)
    spans: Callable  # (fs, path, unit_rows) -> [(start, stop, rows)]: how a file is cut into units
    read: Callable  # (fs, unit) -> the unit's Rows, as prepare_batch takes them
    count: Callable  # open file -> its rows
    exact_rows: bool  # the spans' row counts are exact (else estimates)
    fixed_columns: bool  # one header for the whole file (JSONL: keys vary by line)


FORMATS = {
    "parquet": FileFormat("parquet", lambda f: pq.ParquetFile(f).schema_arrow.names, _parquet_spans,
                          _parquet_unit, lambda f: pq.ParquetFile(f).metadata.num_rows,
                          exact_rows=True, fixed_columns=True),
    "json": FileFormat("json", _json_keys, _json_spans, _json_unit,
                       lambda f: sum(1 for _, line in iter_lines(f) if line.strip()),
                       exact_rows=False, fixed_columns=False),
    # A CSV file is one unit: quoted fields may hold newlines, so it cannot be cut by bytes.
    "csv": FileFormat("csv", csv_header, lambda fs, path, unit_rows: [(0, -1, -1)], _csv_unit,
                      lambda f: len(read_csv_as_text(f, "").wheres), exact_rows=False, fixed_columns=True),
}


def read_unit(fs: pafs.FileSystem, unit: "Unit") -> Rows:
    """The unit's records, as prepare_batch takes them."""
    return FORMATS[unit.kind].read(fs, unit)


def check_file(fs: pafs.FileSystem, path: str, fmt: FileFormat) -> None:
    """Refuses, naming the file, one that cannot be read as a whole, or whose header names
    a column twice."""
    if not fmt.fixed_columns:
        return
    try:
        with fs.open_input_file(path) as f:
            names = fmt.columns(f)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot be read as {fmt.name.upper()} ({str(exc)[:300]}); "
                         "fix or remove the file") from None
    twice = [n for n, count in Counter(names).items() if count > 1]
    if twice:
        raise InputError(f"{path}: column name(s) {', '.join(map(repr, twice))} appear more than once; "
                         "give every column its own name")


def peek_columns(fs: pafs.FileSystem, files: list[str]) -> list[str]:
    """The input's columns: the first file's that has any."""
    for path in files:
        fmt = FORMATS[format_of(path)]
        check_file(fs, path, fmt)
        with fs.open_input_file(path) as f:
            names = fmt.columns(f)
        if names:
            return names
    return []


def count_rows(fs: pafs.FileSystem, files: list[str]) -> int:
    """Rows in these files, streamed, each counted as read_unit reads it."""
    total = 0
    for path in files:
        with fs.open_input_file(path) as f:
            total += FORMATS[format_of(path)].count(f)
    return total
