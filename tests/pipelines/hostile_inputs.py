"""A corpus of hostile inputs, each record with the answer it must get.

`write_corpus(folder)` writes files that one `magistrate judge` must take whole (every
record a row; the valid pairs judged, every problem named with its place);
`write_refusals(folder)` writes files that are wrong as a whole and must be refused
before any judging, naming the file. Built at test time (a few cases are megabytes, and
some bytes are invalid on purpose), from the table of issue 16 and what was found on
the way.

An `Expect` names its record by id when the record has a readable one, else by its place
(`line 3 of rows.jsonl`): the error row of an unparseable line has a derived id.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class Expect:
    case: str  # what the record exercises
    file: str
    id: str | None  # the row's id, when the record has a readable one
    place: str  # where the error must point (line N / row N of FILE)
    error: str | None  # None: judged; else a substring the error must hold
    checks: dict | None = None  # output column -> value the judged row must carry


def _pair(i: str, **extra) -> dict:
    return {"id": i, "prompt": f"Say the word {i!r}.", "response_a": i, "response_b": "no", **extra}


def _line(record: dict, ensure_ascii: bool = True) -> bytes:
    return json.dumps(record, ensure_ascii=ensure_ascii).encode("utf-8")


def _jsonl_rows(folder: Path) -> list[Expect]:
    name = "rows.jsonl"
    lines: list[tuple[bytes, Expect]] = []

    def add(data: bytes, case: str, id_: str | None, error: str | None, checks: dict | None = None):
        lines.append((data, Expect(case, name, id_, f"line {len(lines) + 1} of {name}", error, checks)))

    add(b"\xef\xbb\xbf" + _line(_pair("bom-first")), "UTF-8 BOM before the first line", "bom-first", None)
    deep = b'{"id": "deep", "prompt": "q", "response_a": "a", "response_b": "b", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    add(deep, "nested past Python's recursion limit", None, "nested too deeply")
    add(_line(_pair("surrogate-prompt", prompt="bad \ud800 text")), "lone surrogate in the prompt",
        "surrogate-prompt", "prompt holds a lone surrogate (U+D800)")
    add(_line(_pair("surrogate-extra", extra="keep \udfff me")), "lone surrogate in a passthrough field",
        "surrogate-extra", None, {"extra": '"keep \\udfff me"'})
    add(_line(_pair("surrogate-id") | {"id": "id-\ud801"}), "lone surrogate in the id", None,
        "id holds a lone surrogate")
    add(_line(_pair("bigint", big=2 ** 70)), "passthrough integer past int64", "bigint", None,
        {"big": str(2 ** 70)})
    add(b'{"id": "latin1", "prompt": "caf\xe9?", "response_a": "a", "response_b": "b"}',
        "bytes that are not UTF-8", None, "not valid UTF-8 (byte 0xe9")
    add(_line(_pair("u2028", prompt="one\u2028two\u0085three"), ensure_ascii=False),
        "U+2028 and NEL inside a string (not line ends)", "u2028", None, {"prompt": "one\u2028two\u0085three"})
    add(b'{"id": "dupkey", "prompt": "first", "prompt": "second", "response_a": "a", "response_b": "b"}',
        "duplicate keys in one object", None, "key 'prompt' appears more than once")
    add(_line(_pair("label-float", label=1.0)), "label 1.0 (pandas floats)", "label-float", None, {"label": "A"})
    add(_line(_pair("label-float-b", label="2.0")), "label '2.0'", "label-float-b", None, {"label": "B"})
    add(b'{"id": "label-nan", "prompt": "q?", "response_a": "a", "response_b": "b", "label": NaN}',
        "label NaN: unlabelled", "label-nan", None, {"label": None})
    add(_line(_pair("label-x", label="X")), "a label that is not A, B or tie", "label-x", "label is not understood ('X')")
    add(b'{"id": NaN, "prompt": "first NaN id?", "response_a": "a", "response_b": "b"}',
        "NaN id: missing, so derived", None, None, {"prompt": "first NaN id?"})
    add(b'{"id": NaN, "prompt": "second NaN id?", "response_a": "a", "response_b": "b"}',
        "NaN id again: another derived id, not a duplicate", None, None, {"prompt": "second NaN id?"})
    add(_line(_pair("huge", response_b="x" * 2_000_001)), "a 2 MB field", "huge",
        "response_b is 2,000,001 characters, over the limit of 1,000,000")
    add(b"[1, 2, 3]", "a JSON array, not an object", None, "a JSON list, not an object")
    add(b"{not json", "not JSON", None, "not valid JSON")
    add(_line(_pair("int-response", response_a=4)), "a number as a response", "int-response",
        "response_a is not text (got int)")
    add(_line(_pair("surrogate-key")).replace(b'"id"', b'"\\ud800": 1, "id"'), "a lone surrogate in a key",
        None, "a JSON object key holds a lone surrogate (U+D800)")
    add(_line(_pair("empty-objects", meta_empty={}, meta_list=[{}], meta_nested={"a": {}})),
        "passthrough objects with no keys (Parquet has no struct without fields): their JSON text",
        "empty-objects", None, {"meta_empty": "{}", "meta_list": "[{}]", "meta_nested": '{"a": {}}'})
    for _ in range(2):  # alike rows that cannot be judged: an id each, from the place
        add(b'{"note": 1}', "a row with no pair, twice", None, "prompt is missing")
        add(b'{"prompt": ""}', "an empty prompt, twice", None, "prompt is empty")
    # Line ends: LF (above), CRLF, and the lone CR of old Mac files, mixed in one file.
    data = b"\n".join(d for d, _ in lines) + b"\r\n" + _line(_pair("after-crlf")) + b"\r" + _line(_pair("after-cr")) + b"\n"
    n = len(lines)
    lines += [(b"", Expect("a line after a CRLF", name, "after-crlf", f"line {n + 1} of {name}", None)),
              (b"", Expect("a line after a lone CR", name, "after-cr", f"line {n + 2} of {name}", None))]
    (folder / name).write_bytes(data)
    return [e for _, e in lines]


def _cr_only(folder: Path) -> list[Expect]:
    name = "cr-only.jsonl"
    records = [_pair(f"cr-{i}") for i in range(3)]
    (folder / name).write_bytes(b"\r".join(_line(r) for r in records) + b"\r")
    return [Expect("CR-only line endings: every record kept", name, r["id"], f"line {i + 1} of {name}", None)
            for i, r in enumerate(records)]


def _big_first_row(folder: Path) -> list[Expect]:
    """Sorts first, so its columns are the ones peeked: a first row over 1 MiB."""
    name = "a-big-first.jsonl"
    first = _pair("big-first", notes="n" * (1536 * 1024))
    (folder / name).write_bytes(_line(first) + b"\n" + _line(_pair("after-big")) + b"\n")
    return [Expect("a first JSONL row over 1 MiB", name, "big-first", f"line 1 of {name}", None),
            Expect("the row after it", name, "after-big", f"line 2 of {name}", None)]


def _spreadsheet_csv(folder: Path) -> list[Expect]:
    name = "spreadsheet.csv"
    text = ("\ufeffid,prompt,response_a,response_b,label\r\n"
            'sheet-1,What is 2+2?,4,"4,5",1\r\n'
            "sheet-2,Agent number?,007,7,2\r\n")
    (folder / name).write_bytes(text.encode("utf-8"))
    return [Expect("CSV numeric-looking answers stay text", name, "sheet-1", f"row 1 of {name}", None,
                   {"response_a": "4", "response_b": "4,5", "label": "A"}),
            Expect("CSV '007' stays '007'", name, "sheet-2", f"row 2 of {name}", None,
                   {"response_a": "007", "label": "B"})]


def _reader_names_csv(folder: Path) -> list[Expect]:
    """Columns named like the reader's own facts (`text` once meant "these are JSONL lines")."""
    name = "reader-names.csv"
    (folder / name).write_text("id,prompt,response_a,response_b,text,_where,_read_problem\n"
                               "names-csv,Say yes?,yes,no,a note,here,none\n")
    pq.write_table(pa.table({"id": ["names-pq"], "prompt": ["Say yes?"], "response_a": ["yes"],
                             "response_b": ["no"], "text": ["a note"], "_where": ["here"]}),
                   folder / "reader-names.parquet")
    checks = {"text": "a note", "_where": "here"}
    return [Expect("CSV columns text, _where, _read_problem are just columns", name, "names-csv",
                   f"row 1 of {name}", None, checks | {"_read_problem": "none"}),
            Expect("Parquet columns text, _where are just columns", "reader-names.parquet", "names-pq",
                   "row 1 of reader-names.parquet", None, checks)]


def _bad_csv_rows(folder: Path) -> list[Expect]:
    """Rows Arrow's CSV reader stops at: not UTF-8, and the wrong number of fields, in the
    first block of the file and past it (padding in a passthrough column fills the block)."""
    name, late = "latin1-ragged.csv", "ragged-late.csv"
    (folder / name).write_bytes(b"id,prompt,response_a,response_b\n"
                                b"csv-latin1,caf\xe9?,a,b\n"
                                b"csv-short,Hi?,a\n"
                                b"csv-ok,Say ok?,ok,no\n")
    pad = "n" * 700_000
    (folder / late).write_text("id,prompt,response_a,response_b,notes\n"
                               + "".join(f"late-{i},Say {i}?,{i},no,{pad}\n" for i in (1, 2))
                               + "bad,only,three\nlate-4,Say 4?,4,no,\n")
    return [Expect("CSV bytes that are not UTF-8", name, "csv-latin1", f"row 1 of {name}",
                   "column 'prompt' is not valid UTF-8 (byte 0xe9"),
            Expect("a CSV row with too few fields, in the first block", name, None, f"row 2 of {name}",
                   "the row has 3 fields, the header 4"),
            Expect("the CSV row after it", name, "csv-ok", f"row 3 of {name}", None),
            Expect("CSV rows before a ragged row past the first block", late, "late-1", f"row 1 of {late}", None),
            Expect("CSV rows before a ragged row past the first block", late, "late-2", f"row 2 of {late}", None),
            Expect("a CSV row with too few fields, past the first block", late, None, f"row 3 of {late}",
                   "the row has 3 fields, the header 5"),
            Expect("the CSV row after it", late, "late-4", f"row 4 of {late}", None)]


def _empty_csv(folder: Path) -> list[Expect]:
    (folder / "z-empty.csv").write_bytes(b"")  # not the first file: zero rows, no crash
    return []


def _typed_parquet(folder: Path) -> list[Expect]:
    out = []
    binary = pa.table({"id": ["bin-ok", "bin-bad"],
                       "prompt": pa.array([b"Is this text?", b"caf\xe9"], pa.binary()),
                       "response_a": ["yes", "a"], "response_b": ["no", "b"]})
    pq.write_table(binary, folder / "binary.parquet")
    out += [Expect("Parquet prompt typed binary, valid UTF-8", "binary.parquet", "bin-ok", "row 1 of binary.parquet", None),
            Expect("Parquet prompt typed binary, not UTF-8", "binary.parquet", "bin-bad", "row 2 of binary.parquet",
                   "prompt is bytes that are not UTF-8")]
    decimal = pa.table({"id": ["dec"], "prompt": ["Which number?"],
                        "response_a": pa.array([Decimal("1.50")], pa.decimal128(5, 2)), "response_b": ["2"]})
    pq.write_table(decimal, folder / "decimal.parquet")
    out.append(Expect("Parquet response typed decimal", "decimal.parquet", "dec", "row 1 of decimal.parquet",
                      "response_a is not text (got Decimal)"))
    dates = pa.table({"id": ["date"], "prompt": ["Which day?"], "response_a": ["today"],
                      "response_b": pa.array([19000], pa.date32())})
    pq.write_table(dates, folder / "date.parquet")
    out.append(Expect("Parquet response typed date", "date.parquet", "date", "row 1 of date.parquet",
                      "response_b is not text (got date)"))
    # Parquet does not check that a string column's bytes are UTF-8; a writer may not either.
    bad_utf8 = pa.array([b"Is this text?", b"caf\xe9?"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ["pq-utf8-ok", "pq-utf8-bad"], "prompt": bad_utf8, "response_a": ["a", "a"],
                             "response_b": ["b", "b"]}), folder / "bad-utf8.parquet")
    out += [Expect("Parquet string column, valid UTF-8", "bad-utf8.parquet", "pq-utf8-ok",
                   "row 1 of bad-utf8.parquet", None),
            Expect("Parquet string column holding bytes that are not UTF-8", "bad-utf8.parquet", "pq-utf8-bad",
                   "row 2 of bad-utf8.parquet", "column 'prompt' is not valid UTF-8 (byte 0xe9")]
    return out


def _corrupt_page(folder: Path) -> list[Expect]:
    """Two row groups; the second's first data page header is overwritten."""
    name = "corrupt-page.parquet"
    table = pa.table({"id": ["page-ok-1", "page-ok-2", "page-bad-1", "page-bad-2"],
                      "prompt": ["p1?", "p2?", "p3?", "p4?"], "response_a": ["a"] * 4, "response_b": ["b"] * 4})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=2)
    data = bytearray(buffer.getvalue())
    column = pq.read_metadata(io.BytesIO(bytes(data))).row_group(1).column(0)
    start = column.data_page_offset
    data[start:start + 16] = b"\xff" * 16
    (folder / name).write_bytes(bytes(data))
    out = [Expect("the readable row group of a file with a corrupt page", name, f"page-ok-{i}",
                  f"row {i} of {name}", None) for i in (1, 2)]
    out += [Expect("a row of the corrupt row group", name, None, f"row {i} of {name}", "row group 1 could not be read")
            for i in (3, 4)]
    return out


def write_corpus(folder: Path) -> list[Expect]:
    folder.mkdir(parents=True, exist_ok=True)
    return (_big_first_row(folder) + _jsonl_rows(folder) + _cr_only(folder) + _spreadsheet_csv(folder)
            + _reader_names_csv(folder) + _bad_csv_rows(folder) + _empty_csv(folder) + _typed_parquet(folder)
            + _corrupt_page(folder))


def write_refusals(folder: Path) -> list[tuple[Path, str]]:
    """(file, what the refusal must say) for files that are wrong as a whole."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    good = io.BytesIO()
    pq.write_table(pa.table({"id": ["t"], "prompt": ["p"], "response_a": ["a"], "response_b": ["b"]}), good)
    truncated = folder / "truncated-footer.parquet"
    truncated.write_bytes(good.getvalue()[:-12] + struct.pack("<i", 999) + b"PAR1")
    cases.append((truncated, "cannot be read as PARQUET"))
    dup_csv = folder / "dup-columns.csv"
    dup_csv.write_text("id,prompt,response_a,response_b,prompt\nx,p,a,b,q\n")
    cases.append((dup_csv, "'prompt' appear more than once"))
    dup_parquet = folder / "dup-columns.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["x"]), pa.array(["p"]), pa.array(["a"]), pa.array(["b"]),
                                         pa.array(["q"])], names=["id", "prompt", "response_a", "response_b", "prompt"]),
                   dup_parquet)
    cases.append((dup_parquet, "'prompt' appear more than once"))
    return cases
