"""Opening what `magistrate judge` wrote (local or s3://) for analysis, streamed."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from magistrate.pipelines import SUCCESS, InputError, Location, locate, read_summary, verdict_dataset, verdict_files


READ_AHEAD = 8  # unit files read at once from S3 by Verdicts.unit_tables


@dataclass(frozen=True)
class Verdicts:
    loc: Location
    dataset: pads.Dataset
    summary: dict | None  # summary.json, when the run wrote one

    @property
    def columns(self) -> list[str]:
        return self.dataset.schema.names

    def require(self, columns: tuple[str, ...], purpose: str) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise InputError(f"{self.loc.uri}: {purpose} needs column(s) {', '.join(missing)}, "
                             f"which the verdicts do not have")

    def batches(self, columns: tuple[str, ...]) -> Iterator[dict[str, list]]:
        """Batches as dicts of lists; a column the verdicts lack reads as all nulls."""
        present = [c for c in columns if c in self.columns]
        for batch in self.dataset.to_batches(columns=present):
            rows = batch.to_pydict()
            for c in columns:
                rows.setdefault(c, [None] * batch.num_rows)
            yield rows

    def unit_tables(self, columns: tuple[str, ...]) -> Iterator[pa.Table]:
        """The verdicts file by file, in order, each read whole (a unit file holds one unit)
        with the columns of `columns` the verdicts have, under the output's one schema (a
        column a file lacks is nulls). Each read is synchronous, so none is left in flight
        once the iteration fails, stops or is interrupted (Ctrl-C): a dataset scan abandoned
        half-way goes on reading, on S3 through Python, while the interpreter exits, which
        aborts it. On S3 up to READ_AHEAD files are read at once. A file that cannot be read
        is an InputError naming it."""
        present = [c for c in columns if c in self.columns]
        schema = pa.schema([self.dataset.schema.field(c) for c in present])
        files = list(self.dataset.files)
        if not self.loc.is_s3:
            for path in files:
                yield self._unit_table(path, schema, threads=True)
            return
        with ThreadPoolExecutor(READ_AHEAD) as pool:  # leaving it waits for the reads in flight
            pending: deque = deque()
            try:
                for path in files:
                    pending.append(pool.submit(self._unit_table, path, schema, False))
                    if len(pending) == READ_AHEAD:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def _unit_table(self, path: str, schema: pa.Schema, threads: bool) -> pa.Table:
        try:
            with self.loc.filesystem.open_input_file(path) as f:
                parquet = pq.ParquetFile(f)
                names = set(parquet.schema_arrow.names)
                table = parquet.read(columns=[c for c in schema.names if c in names], use_threads=threads)
            columns = [table.column(c) if c in names else pa.nulls(table.num_rows, schema.field(c).type)
                       for c in schema.names]
            return pa.Table.from_arrays(columns, names=schema.names).cast(schema)
        except (OSError, pa.ArrowException) as exc:
            where = f"s3://{path}" if self.loc.is_s3 else path
            raise InputError(f"{where}: cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())})") from None

    def incomplete(self) -> str | None:
        """None when the output has `_SUCCESS` (its run found it whole); else one line saying
        what is known to be missing, from what is cheap to read: summary.json (written by
        the run's end) and the unit files listed."""
        success = f"{self.loc.path.rstrip('/')}/{SUCCESS}"
        if self.loc.filesystem.get_file_info(success).type != pafs.FileType.NotFound:
            return None
        present = f"{len(self.dataset.files)} unit files present"
        head = f"{self.loc.uri} has no {SUCCESS}"
        summary = self.summary
        if summary is None:
            return (f"{head} and no summary.json: its run has not finished (stopped, or still running); "
                    f"{present}, how many were planned is unknown; reading those")
        if summary.get("complete"):
            return (f"{head} though its summary.json says complete: a later run has begun changing it "
                    f"(and is running, or was stopped); {present}; reading those")
        counts = []
        if summary.get("missing_unit_count"):
            counts.append(f"{summary['missing_unit_count']} of {summary.get('units', '?')} units missing")
        if summary.get("written_off_rows"):
            counts.append(f"{summary['written_off_rows']} rows written off")
        known = f"its summary.json counts {' and '.join(counts)}" if counts else "its run did not finish whole"
        return f"{head}: {known}; {present}; reading those (a --resume of its run completes it)"


def open_verdicts(uri: str, endpoint_url: str | None = None) -> Verdicts:
    loc = locate(uri, endpoint_url)
    files = verdict_files(loc)
    if not files:
        raise InputError(f"{uri}: no verdicts here (expected {uri.rstrip('/')}/verdicts/*.parquet, "
                         "as `magistrate judge --output` writes)")
    dataset = verdict_dataset(loc, files)
    if "winner" not in dataset.schema.names:
        raise InputError(f"{uri}: the files in verdicts/ have no winner column; not a magistrate output")
    return Verdicts(loc, dataset, read_summary(loc))
