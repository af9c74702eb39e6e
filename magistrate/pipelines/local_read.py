"""Reading pairs in this process, without Ray: for `render`, previews and checks.

One file at a time, batch by batch, so a large input is streamed."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from magistrate.pipelines.prepare import prepare_batch
from magistrate.pipelines.sources import file_format, list_input_files, locate, resolve_mapping


def _read_file(fs, path: str, kind: str) -> pa.Table:
    with fs.open_input_file(path) as stream:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(stream)
        if kind == "json":
            import pyarrow.json as pj

            return pj.read_json(stream)
        import pyarrow.csv as pc

        return pc.read_csv(stream)


def read_prepared(uri: str, fmt: str = "auto", columns: str | None = None,
                  endpoint_url: str | None = None, limit: int | None = None) -> Iterator[dict]:
    """Prepared rows (standard columns, id, `_invalid`) as dicts."""
    loc = locate(uri, endpoint_url)
    files = list_input_files(loc)
    kind = file_format(files)
    seen = 0
    for path in files:
        table = _read_file(loc.filesystem, path, kind)
        mapping, preset = resolve_mapping(table.column_names, fmt, columns, uri)
        for batch in table.to_batches(max_chunksize=1024):
            for row in prepare_batch(pa.Table.from_batches([batch]), mapping, preset).to_pylist():
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield row
