"""Work units: the input cut into pieces that are judged and published whole.

A unit is rows [start, stop) of a Parquet or CSV file, or a byte range of a JSONL file
(the lines that start inside it), of about `--unit-rows` pairs whatever the file's layout
(pipelines/sharding.py cuts them; a unit that cannot be read in place is read from its
staged copy). Its verdicts are one file, verdicts/<unit>.parquet,
made in memory and then stored in one step (pipelines/store.py), with the rows the unit
was planned to hold and the rows written off recorded in its footer. So a unit file whose
footer agrees is a finished unit, a killed run leaves no half-unit, and resuming needs
only the names and footers of the unit files: never the finished ids
(ray-project/ray#65891), never rows created mid-pipeline (#60704), since both orders of a
pair are judged inside the unit that holds the pair.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from magistrate.pairs import safe_text
from magistrate.pipelines.reading import FORMATS, read_unit
from magistrate.pipelines.sources import Location
from magistrate.pipelines.store import map_files, write_whole

VERDICTS = "verdicts"
UNIT_ROWS = 2048  # target pairs per unit (each holds 0.5-2x): a lost unit costs at most about twice this


@dataclass(frozen=True)
class Unit:
    unit_id: str
    path: str
    kind: str  # parquet | json | csv
    start: int  # parquet, csv: first row; json: first byte
    stop: int  # parquet, csv: the row after the last; json: the byte after the last
    rows: int  # exact for parquet and csv; for json, the non-blank lines (blank-looking ones count)
    max_rows: int = -1  # --limit: judge only the unit's first max_rows rows
    redo: bool = False  # its file holds written-off rows: judge only those again
    staged: str = ""  # its staged copy in the output's _staged/ (sharding.py), or "": read in place
    version: str = ""  # the S3 VersionId its file is read at (sharding.input_identities), or "": as it is

    @property
    def rows_exact(self) -> bool:
        """`rows` is exact (Parquet's footers), not an estimate."""
        return FORMATS[self.kind].exact_rows

    def as_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> "Unit":
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})


def unit_id_of(path: str, kind: str, start: int, stop: int, identity: str = "") -> str:
    """A unit's id: its file, its range, and the file's content identity (sharding.py)."""
    digest = hashlib.sha256(f"{path}|{kind}|{start}|{stop}|{identity}".encode()).hexdigest()[:16]
    return f"unit-{digest}"


def apply_limit(src: Location, units: list[Unit], limit: int) -> list[Unit]:
    """The units that hold the first `limit` rows, the last one cut short. A cut unit
    has its own id, so a later full run never mistakes it for a whole one."""
    kept, remaining = [], limit
    for unit in units:
        if remaining <= 0:
            break
        rows = unit.rows if unit.rows_exact else read_unit(src, unit).num_rows
        if rows > remaining:
            unit = dataclasses.replace(
                unit, max_rows=remaining,
                unit_id=unit.unit_id + f"-first{remaining}")
            rows = remaining
        kept.append(unit)
        remaining -= rows
    return kept


def verdicts_dir(loc: Location) -> str:
    return f"{loc.path.rstrip('/')}/{VERDICTS}"


def unit_path(loc: Location, unit_id: str) -> str:
    return f"{verdicts_dir(loc)}/{unit_id}.parquet"


def is_unit_file(name: str) -> bool:
    return name.startswith("unit-") and name.endswith(".parquet")


@dataclass(frozen=True)
class UnitFile:
    """What a published unit file says of itself (its footer: no row is read)."""

    rows: int  # rows in the file
    planned: int  # rows its unit held when it was read (recorded at publish)
    written_off: int  # rows that failed for infrastructure reasons: --resume judges them again
    run_id: str | None = None  # the run that published it

    @property
    def whole(self) -> bool:
        """Every planned row is in the file (some may be written off)."""
        return self.rows == self.planned

    @property
    def finished(self) -> bool:
        return self.whole and self.written_off == 0


def unit_files(loc: Location, only: set[str] | None = None) -> dict[str, UnitFile]:
    """The published units (or those of `only`) and their footers' account of themselves,
    listed now (pipelines/sources.py: no cached listing). A file whose footer cannot be
    read, or that does not say how many rows it was planned to hold, counts as holding
    none of them: its unit is judged again."""
    selector = pafs.FileSelector(verdicts_dir(loc), recursive=False, allow_not_found=True)
    found = {os.path.basename(i.path)[: -len(".parquet")]: i.path
             for i in loc.filesystem.get_file_info(selector)
             if i.is_file and is_unit_file(os.path.basename(i.path))}
    if only is not None:
        found = {k: v for k, v in found.items() if k in only}

    def footer(path: str) -> UnitFile:
        try:
            with loc.filesystem.open_input_file(path) as f:
                meta = pq.read_metadata(f)
            record = json.loads((meta.metadata or {}).get(b"magistrate", b"{}"))
            return UnitFile(meta.num_rows, int(record.get("rows", -1)), int(record.get("written_off", 0)),
                            record.get("run_id"))
        except Exception:  # noqa: BLE001 - an unreadable file is an unfinished unit
            return UnitFile(0, -1, 0)

    return dict(zip(found, map_files(loc, footer, found.values())))


def finished_units(loc: Location, only: set[str] | None = None) -> set[str]:
    """Ids of the units published whole, with nothing written off."""
    return {unit_id for unit_id, f in unit_files(loc, only).items() if f.finished}


def publish(loc: Location, unit_id: str, table: pa.Table, planned_rows: int,
            metadata: dict) -> None:
    """Make a unit's verdicts visible under their final name, whole or not at all
    (pipelines/store.py), recording the rows the unit was planned to hold and how many of
    them were written off, so that only a complete file ever counts as finished."""
    if table.num_rows != planned_rows:
        raise ValueError(f"unit {unit_id}: {table.num_rows} rows, planned {planned_rows}")
    written_off = table.column("written_off") if "written_off" in table.column_names else None
    record = {**metadata, "rows": planned_rows,
              "written_off": 0 if written_off is None else int(pc.sum(pc.fill_null(written_off, False)).as_py() or 0)}
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"magistrate": json.dumps(record).encode()})
    write_whole(loc, unit_path(loc, unit_id), _parquet_bytes(table))


def _parquet_bytes(table: pa.Table) -> bytes:
    """The table as Parquet, all in memory first (an exception here publishes nothing). A
    column Parquet cannot write (a passthrough type with no Parquet encoding) is written as
    its values' JSON text instead: no row's content can keep a unit, or its write-off, from
    being published."""
    try:
        return _write(table)
    except pa.ArrowException:
        for i, name in enumerate(table.column_names):
            try:
                _write(table.select([i]))
            except pa.ArrowException:
                text = pa.array([safe_text(v) for v in table.column(i).to_pylist()], pa.string())
                table = table.set_column(i, name, text)
        return _write(table)


def _write(table: pa.Table) -> bytes:
    buffer = pa.BufferOutputStream()
    # Page checksums: a file whose data pages were damaged after it was published (its
    # footer intact) is found by reading it (`damaged`), not counted as finished.
    pq.write_table(table, buffer, write_page_checksum=True)
    return buffer.getvalue().to_pybytes()


def read_verified(f, columns: list[str] | None = None) -> pa.Table:
    """A unit file read whole, every page checked against its checksum."""
    return pq.ParquetFile(f, page_checksum_verification=True).read(columns=columns)


def damaged(loc: Location, unit_ids: set[str]) -> set[str]:
    """The unit files among these whose pages fail their checksums (or cannot be read)."""
    def bad(unit_id: str) -> bool:
        try:
            with loc.filesystem.open_input_file(unit_path(loc, unit_id)) as f:
                read_verified(f)
            return False
        except (OSError, pa.ArrowException):
            return True

    ids = sorted(unit_ids)
    return {u for u, is_bad in zip(ids, map_files(loc, bad, ids)) if is_bad}


def clean_staging(loc: Location) -> int:
    """Remove staging files a killed run left behind (they were never published)."""
    selector = pafs.FileSelector(verdicts_dir(loc), recursive=False, allow_not_found=True)
    stale = [i.path for i in loc.filesystem.get_file_info(selector)
             if i.is_file and is_staging_file(os.path.basename(i.path))]
    for path in stale:
        loc.filesystem.delete_file(path)
    return len(stale)


def is_staging_file(name: str) -> bool:
    """A local staging file of a unit (pipelines/store.py names them)."""
    return name.startswith(".unit-") and name.endswith(".tmp")
