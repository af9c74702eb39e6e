"""Reading pairs in this process, without Ray: for `render`, previews and checks.

One file at a time, batch by batch, so a large input is streamed."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from magistrate.pipelines.prepare import prepare_batch
from magistrate.pipelines.sources import (
    file_format,
    list_input_files,
    locate,
    peek_columns,
    resolve_mapping,
)


def _batches(fs, path: str, kind: str) -> Iterator[pa.Table]:
    with fs.open_input_file(path) as stream:
        if kind == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(stream).iter_batches(batch_size=1024):
                yield pa.Table.from_batches([batch])
        elif kind == "json":
            lines = [line for line in stream.read().decode("utf-8").splitlines() if line.strip()]
            for i in range(0, len(lines), 1024):
                yield pa.table({"text": pa.array(lines[i:i + 1024], pa.string())})
        else:
            import pyarrow.csv as pc

            yield pc.read_csv(stream)


def read_prepared(uri: str, fmt: str = "auto", columns: str | None = None,
                  endpoint_url: str | None = None, limit: int | None = None) -> Iterator[dict]:
    """Prepared rows (standard columns, id, `_invalid`) as dicts, in input order."""
    loc = locate(uri, endpoint_url)
    files = list_input_files(loc)
    kind = file_format(files)
    mapping, preset = resolve_mapping(peek_columns(loc, files[0], kind), fmt, columns, uri)
    seen = 0
    for path in files:
        for batch in _batches(loc.filesystem, path, kind):
            for row in prepare_batch(batch, mapping, preset, json_lines=kind == "json").to_pylist():
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield row
