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
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from magistrate.pairs import MAX_FIELD_CHARS, decode_line, safe_text
from magistrate.pipelines.sources import InputError, Location, format_of

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

    def line(self, pos: int, cap: int | None = None) -> tuple[bytes | "Oversized" | None, int]:
        """The line starting at `pos` (without its end) and where the next one starts;
        None at the end of the file. A line longer than `cap` bytes is not held: it is
        read past, and comes back as an `Oversized` with its length and first bytes."""
        del self.buf[: pos - self.base]
        self.base, scan = pos, 0
        head, dropped = None, 0  # past the cap: the line's first bytes, and bytes let go
        while True:
            ends = [i for i in (self.buf.find(b"\n", scan), self.buf.find(b"\r", scan)) if i >= 0]
            if ends:
                end = min(ends)
                if self.buf[end] == 13 and end + 1 == len(self.buf) and not self.eof and self._more():
                    scan = end  # a CR at the end of what was read: is an LF next?
                    continue
                after = end + 2 if self.buf[end:end + 2] == b"\r\n" else end + 1
                line = bytes(self.buf[:end]) if head is None else Oversized(dropped + end, head)
                return line, self.base + after
            if cap is not None and len(self.buf) > cap:
                head = head if head is not None else bytes(self.buf[:80])
                dropped += len(self.buf)
                self.base += len(self.buf)
                del self.buf[:]
            scan = len(self.buf)
            if not self._more():
                if head is not None:
                    return Oversized(dropped + len(self.buf), head), self.base + len(self.buf)
                return (bytes(self.buf), self.base + len(self.buf)) if self.buf else (None, pos)


@dataclass(frozen=True)
class Oversized:
    """A line over the reader's cap, read past without being held."""

    size: int  # bytes
    head: bytes  # its first bytes, to name it by


def line_cap(max_chars: int) -> int:
    """The longest JSONL line read whole, in bytes: room for three fields of `max_chars`
    characters at up to four UTF-8 bytes each (plus JSON escapes), and 16 MiB of other
    columns. A longer line is an error row, read past in 64 KiB pieces: a 2 GiB line
    costs no process 2 GiB."""
    return 16 * max_chars + (16 << 20)


def iter_lines(f, start: int = 0, stop: int | None = None,
               cap: int | None = None) -> Iterator[tuple[int, bytes | Oversized]]:
    """(offset, line) for every line that starts at a byte in [start, stop): each line
    belongs to exactly one range, wherever the range boundaries fall. A line over `cap`
    bytes comes as an `Oversized`."""
    reader = _Bytes(f, max(start - 1, 0))
    pos = start
    if start > 0:  # the line running across the boundary belongs to the range before
        _, pos = reader.line(start - 1, cap=1)
    while stop is None or pos < stop:
        line, after = reader.line(pos, cap)
        if line is None:
            return
        if pos == 0 and isinstance(line, bytes) and line.startswith(_BOM):
            line = line[len(_BOM):]
        yield pos, line
        pos = after


def _json_unit(fs: pafs.FileSystem, unit: "Unit", max_chars: int) -> Rows:
    name = os.path.basename(unit.path)
    texts, wheres, problems = [], [], []
    cap = line_cap(max_chars)
    with fs.open_input_file(unit.path) as f:
        for number, (offset, line) in enumerate(iter_lines(f, unit.start, unit.stop, cap), start=1):
            if isinstance(line, Oversized):
                text, problem = None, (f"the line is {line.size:,} bytes, over the {cap:,}-byte limit for one "
                                       f"record (16 x --max-field-chars + 16 MiB); it starts "
                                       f"{safe_text(line.head.decode('utf-8', 'backslashreplace'))!r}")
            elif not line.strip():
                continue
            else:
                text, problem = decode_line(line)
            texts.append(text)
            problems.append(problem)
            # Line numbers are known only counting from the file's start.
            wheres.append(f"line {number} of {name}" if unit.start == 0 else f"the line at byte {offset} of {name}")
    return Rows(unit.path, None, texts, wheres, problems)


def _parquet_unit(fs: pafs.FileSystem, unit: "Unit", max_chars: int) -> Rows:
    """Rows [start, stop) of the file, whole row groups (a range that cuts a row group is
    staged: sharding.py)."""
    name = os.path.basename(unit.path)
    parts, problems = [], []
    with fs.open_input_file(unit.path) as f:
        parquet = pq.ParquetFile(f)
        meta, first = parquet.metadata, 0
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            if first >= unit.stop:
                break
            if first >= unit.start:
                try:
                    table, bad = _utf8_checked(parquet.read_row_group(group), _is_string)
                except (OSError, pa.ArrowException) as exc:
                    lost = _unreadable_columns(parquet, [group])
                    if lost and len(lost) < len(parquet.schema_arrow):
                        table = _with_nulls(parquet.read_row_group(group, columns=_kept(parquet, lost)),
                                            parquet.schema_arrow, lost)
                        table, bad = _utf8_checked(table, _is_string)
                        bad = [b or _lost_message(lost) for b in bad]
                    else:
                        table, bad = _unreadable_group(parquet.schema_arrow, group, rows, exc)
                parts.append(table)
                problems += bad
            first += rows
        schema = parquet.schema_arrow
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    return Rows(unit.path, table, None, [f"row {unit.start + i + 1} of {name}" for i in range(len(problems))],
                problems)


def _unreadable_group(schema: pa.Schema, group, rows: int, exc: Exception) -> tuple[pa.Table, list]:
    """A row group that cannot be read (a corrupt data page): its rows stay, all null, so
    every one becomes an error row in its place."""
    return (pa.table({f.name: pa.nulls(rows, f.type) for f in schema}),
            [f"row group {group} could not be read ({str(exc)[:200]})"] * rows)


def _unreadable_columns(parquet: pq.ParquetFile, groups: list[int]) -> dict[str, str]:
    """The columns Arrow refuses in these row groups for their text, and why: a dictionary
    page is read first and checked for UTF-8 (a pandas `category` column with a bad byte).
    Any other failure (a corrupt page) is the row group's: none are returned for it."""
    lost = {}
    for name in parquet.schema_arrow.names:
        for group in groups:
            try:
                for _ in parquet.iter_batches(batch_size=1 << 16, row_groups=[group], columns=[name],
                                              use_threads=False):
                    pass
            except (OSError, pa.ArrowException) as exc:
                if "UTF8" not in str(exc) and "UTF-8" not in str(exc):
                    return {}
                lost[name] = str(exc)[:200]
                break
    return lost


def _kept(parquet: pq.ParquetFile, lost: dict[str, str]) -> list[str]:
    return [n for n in parquet.schema_arrow.names if n not in lost]


def _with_nulls(table: pa.Table, schema: pa.Schema, lost: dict[str, str]) -> pa.Table:
    """The columns that could be read, and the lost ones all null, in the file's order."""
    return pa.table({f.name: table.column(f.name) if f.name not in lost else pa.nulls(table.num_rows, f.type)
                     for f in schema}, schema=schema)


def _lost_message(lost: dict[str, str]) -> str:
    name, why = next(iter(lost.items()))
    hint = "; save the file as UTF-8" if "UTF8" in why or "UTF-8" in why else ""
    return f"column {safe_text(name)!r} could not be read ({why}){hint}"


def _is_string(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def _holds_text(type_: pa.DataType) -> bool:
    """A type with a string somewhere inside (a list of chat messages, a struct)."""
    if _is_string(type_):
        return True
    if pa.types.is_dictionary(type_):
        return _holds_text(type_.value_type)
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return _holds_text(type_.value_type)
    if pa.types.is_map(type_):
        return _holds_text(type_.key_type) or _holds_text(type_.item_type)
    if pa.types.is_struct(type_):
        return any(_holds_text(f.type) for f in type_)
    return False


def _decoded(table: pa.Table) -> pa.Table:
    """Dictionary columns (a pandas `category`) as plain columns of their values, so their
    text is checked like any other column's (a dictionary's values are checked as a whole,
    not by the rows that use them)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            chunks = [pc.take(c.dictionary, c.indices) for c in table.column(i).chunks]
            table = table.set_column(i, pa.field(field.name, field.type.value_type),
                                     pa.chunked_array(chunks, field.type.value_type))
    return table


def _utf8_checked(table: pa.Table, is_text: Callable) -> tuple[pa.Table, list[str | None]]:
    """The table with its text columns (those `is_text` picks) as strings, and per row why it
    cannot be read: a value whose bytes are not UTF-8 (Parquet does not check them; CSV
    columns are read as bytes for this). Nothing is replaced silently: such a row is an error
    row naming the column and the byte, and its values are kept escaped, as every error row's
    are (pairs.safe_text). Text nested in other columns (chat messages, structs, a dictionary's
    values) is checked too; a nested value that is not UTF-8 is nulled in its error row (it has
    no text form to keep)."""
    table = _decoded(table)
    problems: list[str | None] = [None] * table.num_rows
    for i, field in enumerate(table.schema):
        if not is_text(field.type):
            if _holds_text(field.type):
                table = table.set_column(i, field, _nested_checked(table.column(i), field.name, problems))
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


def _nested_checked(column: pa.ChunkedArray, name: str, problems: list) -> pa.ChunkedArray:
    """`column` with every value whose nested text is not UTF-8 nulled, and its row's problem."""
    try:
        column.validate(full=True)  # checks every string inside, in C++
        return column
    except pa.ArrowInvalid:
        pass
    combined = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    keep = []
    for row in range(len(combined)):
        try:
            combined[row].as_py()
            keep.append(row)
        except UnicodeDecodeError as exc:
            keep.append(None)
            problems[row] = problems[row] or (
                f"column {safe_text(name)!r} holds text that is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} "
                "inside its nested values); save the file as UTF-8")
    return pa.chunked_array([combined.take(pa.array(keep, pa.int64()))], column.type)


@dataclass(frozen=True)
class Span:
    """One unit's place in its file: rows [start, stop) of a Parquet or CSV file, bytes
    [start, stop) of a JSONL file (the lines that start there). `staged` names the unit's
    staged copy (sharding.py) when it is not read in place."""

    start: int
    stop: int
    rows: int
    staged: str = ""


@dataclass(frozen=True)
class Piece:
    """What cutting part of a file yields: a span, and for a staged one its rows as read
    (before the UTF-8 check) with the problems found while reading, by row index."""

    span: Span
    table: pa.Table | None = None
    problems: dict[int, str] | None = None


def _even(start: int, stop: int, unit_rows: int) -> list[tuple[int, int]]:
    """[start, stop) cut into round(n / unit_rows) runs of equal size (within one row):
    each between 0.67 and 1.5 times unit_rows."""
    n = stop - start
    k = max(1, round(n / unit_rows))
    bounds = [start + (n * i) // k for i in range(k + 1)]
    return list(zip(bounds, bounds[1:]))


# -- Parquet: runs of whole row groups; a row group over 2 x unit_rows is staged in unit-sized pieces.

def _parquet_layout(fs: pafs.FileSystem, path: str, unit_rows: int) -> tuple[list[Span], list[tuple[int, ...]]]:
    """Runs of whole row groups of unit_rows to 2 x unit_rows, read in place; a row group
    over 2 x unit_rows, with the short run before it, is a part to cut (first group, group
    after the last, first row, row after the last)."""
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    spans, parts = [], []
    start, start_group, first = 0, 0, 0  # the open run: its first row and group; the next row
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        if rows > 2 * unit_rows:
            parts.append((start_group, group + 1, start, first + rows))
            start, start_group = first + rows, group + 1
        elif first > start and first + rows - start > 2 * unit_rows:
            spans.append(Span(start, first, first - start))
            start, start_group = first, group
        first += rows
        if start < first and first - start >= unit_rows:
            spans.append(Span(start, first, first - start))
            start, start_group = first, group + 1
    if first > start or (not spans and not parts):
        spans.append(Span(start, first, first - start))
    return spans, parts


def _parquet_cut(fs: pafs.FileSystem, path: str, part: tuple[int, ...], unit_rows: int) -> Iterator[Piece]:
    """Row groups part[0]..part[1] (rows part[2]..part[3] of the file), streamed once, in pieces."""
    first_group, stop_group, first, stop = part
    ranges = _even(first, stop, unit_rows)
    with fs.open_input_file(path) as f:
        # buffer_size: pages are read as they are decoded, not the row group's column chunks whole.
        parquet = pq.ParquetFile(f, buffer_size=1 << 20, pre_buffer=False)
        schema, groups, done, lost = parquet.schema_arrow, list(range(first_group, stop_group)), 0, {}

        def stream(skip: int) -> Iterator[Piece]:
            nonlocal done
            held, have = [], 0
            for batch in parquet.iter_batches(batch_size=min(unit_rows, 8192), use_threads=False,
                                              row_groups=groups, columns=_kept(parquet, lost)):
                cut = min(skip, batch.num_rows)
                skip -= cut
                if cut < batch.num_rows:
                    held.append(batch.slice(cut))
                    have += batch.num_rows - cut
                while done < len(ranges) and have >= ranges[done][1] - ranges[done][0]:
                    lo, hi = ranges[done]
                    table = _with_nulls(pa.Table.from_batches(held), schema, lost) if lost else \
                        pa.Table.from_batches(held, schema)
                    problems = dict.fromkeys(range(hi - lo), _lost_message(lost)) if lost else {}
                    yield Piece(Span(lo, hi, hi - lo), table.slice(0, hi - lo), problems)
                    rest = pa.Table.from_batches(held).slice(hi - lo)
                    held, have, done = rest.to_batches(), have - (hi - lo), done + 1

        try:
            yield from stream(0)
        except (OSError, pa.ArrowException) as exc:
            lost = _unreadable_columns(parquet, groups)
            try:
                if not lost or len(lost) == len(schema):
                    raise exc
                yield from stream(ranges[done][0] - first)  # again, past the pieces given
            except (OSError, pa.ArrowException) as exc2:
                label = f"{first_group}" if stop_group == first_group + 1 else f"{first_group}-{stop_group - 1}"
                for lo, hi in ranges[done:]:
                    table, bad = _unreadable_group(schema, label, hi - lo, exc2)
                    yield Piece(Span(lo, hi, hi - lo), table, dict(enumerate(bad)))


# -- JSONL: byte ranges of about unit_rows lines, from one pass that finds the line starts.

_JSON_PART = 256 << 20  # bytes a planning task scans: a big file is scanned in parallel
_SCAN = 8 << 20


def _json_layout(fs: pafs.FileSystem, path: str, unit_rows: int) -> tuple[list[Span], list[tuple[int, int, int]]]:
    size = fs.get_file_info(path).size
    return [], [(k, start, min(size, start + _JSON_PART)) for k, start in enumerate(range(0, max(size, 1), _JSON_PART))]


def _json_cut(fs: pafs.FileSystem, path: str, part: tuple[int, int, int], unit_rows: int) -> Iterator[Piece]:
    """Pieces of at most unit_rows/4 non-blank lines each, covering bytes part[1]..part[2]:
    where every 4th..-th line starts, found with numpy (a line starts after LF, after a CR
    not followed by LF, and at byte 0). Blank lines are not counted (the reader skips them)."""
    import numpy as np

    _, start, stop = part
    step = max(1, unit_rows // 4)
    marks, count = [], 0
    with fs.open_input_file(path) as f:
        previous = 10  # byte 0 starts a line
        if start > 0:
            f.seek(start - 1)
            previous = f.read(1)[0]
        f.seek(start)
        pos = start
        while pos < stop:
            block = np.frombuffer(f.read(min(_SCAN, stop - pos)), np.uint8)
            if not len(block):
                break
            before = np.concatenate(([previous], block[:-1]))
            starts = np.flatnonzero(((before == 10) | ((before == 13) & (block != 10)))
                                    & (block != 10) & (block != 13))
            # every step-th line start, counting from this part's first
            marks += (starts[(-count) % step::step] + pos).tolist()
            count += len(starts)
            previous, pos = int(block[-1]), pos + len(block)
    bounds = marks + [stop]
    for k in range(len(marks)):
        yield Piece(Span(bounds[k], bounds[k + 1], min(step, count - k * step)))


def _json_join(spans: list[Span], unit_rows: int) -> list[Span]:
    """The scan's pieces joined into units of unit_rows to 1.25 x unit_rows lines; a short
    last one joins the one before (at most 1.75 x)."""
    units, start, rows = [], None, 0
    for span in spans:
        start = span.start if start is None else start
        rows += span.rows
        if rows >= unit_rows:
            units.append(Span(start, span.stop, rows))
            start, rows = None, 0
    if start is not None:
        if units and rows < unit_rows / 2:
            units[-1] = Span(units[-1].start, spans[-1].stop, units[-1].rows + rows)
        else:
            units.append(Span(start, spans[-1].stop, rows))
    return units


# -- CSV: streamed once by Arrow's reader (quoted newlines allowed) into unit-sized pieces.

def _csv_layout(fs: pafs.FileSystem, path: str, unit_rows: int) -> tuple[list[Span], list[tuple[int, int, int]]]:
    return [], [(0, 0, -1)]  # quoted fields may hold newlines: only a parser finds the records


def _csv_options(names: list[str], handler) -> dict:
    return {"read_options": pcsv.ReadOptions(use_threads=False, block_size=4 << 20),
            # use_threads=False: only then does Arrow number the rows (the header is row 1).
            "parse_options": pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=handler),
            "convert_options": pcsv.ConvertOptions(column_types={n: pa.binary() for n in names},
                                                   strings_can_be_null=False)}


def _csv_cut(fs: pafs.FileSystem, path: str, part, unit_rows: int) -> Iterator[Piece]:
    """The file's records in pieces of unit_rows (a short last one joins the one before):
    every column as bytes, as written (read_csv_as_text's rule). A row with the wrong
    number of fields is kept in its place, all null, with its problem."""
    with fs.open_input_file(path) as f:
        names = csv_header(f)
        if not names:
            return
        ragged: dict[int, str] = {}  # record index -> why

        def keep_count(row) -> str:
            index = row.number - 2 if row.number is not None else (1 << 40) + len(ragged)  # else last
            ragged[index] = (f"the row has {row.actual_columns} fields, the header {row.expected_columns} "
                             f"({safe_text(row.text[:100])!r})")
            return "skip"

        f.seek(0)
        reader = pcsv.open_csv(f, **_csv_options(names, keep_count))
        held: list[pa.RecordBatch] = []
        good, done, last = 0, 0, None  # good rows held; records cut; the piece not yet given

        def cut(stop: int) -> Piece:
            nonlocal held, good, done
            bad = {i - done: ragged.pop(i) for i in sorted(ragged) if i < stop}
            want = stop - done - len(bad)
            table = pa.Table.from_batches(held, reader.schema)
            held, good = table.slice(want).to_batches(), good - want
            table, problems = _with_ragged(table.slice(0, want), [None] * want, bad)
            piece = Piece(Span(done, stop, stop - done), table, {i: p for i, p in enumerate(problems) if p})
            done = stop
            return piece

        for batch in reader:
            held.append(batch)
            good += batch.num_rows
            # Arrow parses in order: every skipped row before the rows it gave is known.
            while good + sum(1 for i in ragged if i < done + unit_rows) >= unit_rows:
                if last is not None:
                    yield last
                last = cut(done + unit_rows)
        rest = good + len(ragged)
        if rest:
            piece = cut(done + rest)
            if last is not None and piece.span.rows < unit_rows / 2:
                piece = _joined(last, piece)
                last = None
            if last is not None:
                yield last
            last = piece
        if last is not None:
            yield last


def _joined(first: Piece, second: Piece) -> Piece:
    shift = first.span.rows
    return Piece(Span(first.span.start, second.span.stop, first.span.rows + second.span.rows),
                 pa.concat_tables([first.table, second.table]),
                 {**first.problems, **{i + shift: p for i, p in second.problems.items()}})


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
        # Ragged rows in the first block are the cut's to tell, row by row.
        return pcsv.open_csv(f, read_options=pcsv.ReadOptions(use_threads=False, block_size=1 << 20),
                             parse_options=pcsv.ParseOptions(newlines_in_values=True,
                                                             invalid_row_handler=lambda row: "skip")).schema.names
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return []
        raise


def _staged_unit(staging: "Location", unit: "Unit") -> Rows:
    """A unit read from its staged piece (sharding.py): the rows as its file gave them, then
    checked as reading the file in place would (CSV's columns are bytes until then)."""
    from magistrate.pipelines.sharding import staged_path

    with staging.filesystem.open_input_file(staged_path(staging, unit.staged)) as f:
        table = pq.read_table(f)
    record = json.loads((table.schema.metadata or {}).get(b"magistrate_staged", b"{}"))
    table = table.replace_schema_metadata(None)
    table, problems = _utf8_checked(table, pa.types.is_binary if unit.kind == "csv" else _is_string)
    for index, problem in record.get("problems", {}).items():
        problems[int(index)] = problem
    name = os.path.basename(unit.path)
    return Rows(unit.path, table, None, [f"row {unit.start + i + 1} of {name}" for i in range(table.num_rows)],
                problems)


def _json_keys(f, lines: int = 100) -> list[str]:
    """The keys of a JSONL file's first records (a line over the cap is not read)."""
    from magistrate.pairs import MAX_FIELD_CHARS

    keys: dict[str, None] = {}
    seen = 0
    for _, line in iter_lines(f, cap=line_cap(MAX_FIELD_CHARS)):
        if isinstance(line, Oversized):
            continue
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
    """How one input format is read and cut into units: the only place that knows the
    formats apart. Planning a file is `layout` (from its size or footer: the spans known
    at once and the parts that need a pass), `cut` over each part (sharding.py runs these
    as parallel tasks and stores staged pieces), then `join` over all spans in order."""

    name: str
    columns: Callable  # open file -> its column names (JSONL: its first records' keys)
    layout: Callable  # (fs, path, unit_rows) -> ([Span], [part]): a part is a tuple of ints
    cut: Callable  # (fs, path, part, unit_rows) -> Pieces, in order
    join: Callable  # ([Span] in order, unit_rows) -> the units' spans
    read: Callable  # (fs, unit, max_chars) -> the unit's Rows, for a unit read in place
    exact_rows: bool  # the spans' row counts are exact (else estimates)
    fixed_columns: bool  # one header for the whole file (JSONL: keys vary by line)
    staged: bool  # its cut pieces carry rows, stored as staged copies


def _as_is(spans: list[Span], unit_rows: int) -> list[Span]:
    return spans


FORMATS = {
    "parquet": FileFormat("parquet", lambda f: pq.ParquetFile(f).schema_arrow.names, _parquet_layout,
                          _parquet_cut, _as_is, _parquet_unit, exact_rows=True, fixed_columns=True, staged=True),
    "json": FileFormat("json", _json_keys, _json_layout, _json_cut, _json_join, _json_unit,
                       exact_rows=False, fixed_columns=False, staged=False),
    "csv": FileFormat("csv", csv_header, _csv_layout, _csv_cut, _as_is, None,
                      exact_rows=True, fixed_columns=True, staged=True),
}


def read_unit(src: Location, unit: "Unit", staging: "Location | None" = None,
              max_chars: int = MAX_FIELD_CHARS) -> Rows:
    """The unit's records, as prepare_batch takes them: from its staged piece (in the
    output's staging folder, `staging`) or from the file in place (`src`, at the version
    the unit was cut from)."""
    if unit.staged:
        if staging is None:
            raise ValueError(f"unit {unit.unit_id} is staged and no staging location was given")
        return _staged_unit(staging, unit)
    return FORMATS[unit.kind].read(src.at_versions({unit.path: unit.version}).filesystem, unit, max_chars)


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
