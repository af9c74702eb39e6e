"""Reading pairs in this process, without Ray: for `render` and `estimate`.

The same units, reader and validation as `magistrate judge` (pipelines/reading.py,
pipelines/prepare.py), one unit at a time, so a large input is streamed and every command
gives a row the same answer."""

from __future__ import annotations

from typing import Iterator

from magistrate.pipelines.prepare import MAX_FIELD_CHARS
from magistrate.pipelines.sources import list_input_files, locate, resolve_mapping


def read_prepared(uri: str, fmt: str = "auto", columns: str | None = None,
                  endpoint_url: str | None = None, limit: int | None = None,
                  max_chars: int = MAX_FIELD_CHARS) -> Iterator[dict]:
    """Prepared rows (standard columns, id, `_invalid`) as dicts, in input order."""
    from magistrate.pipelines.reading import peek_columns
    from magistrate.pipelines.unit_worker import prepare_unit
    from magistrate.pipelines.units import plan_units

    loc = locate(uri, endpoint_url)
    files = list_input_files(loc)
    mapping, preset = resolve_mapping(peek_columns(loc.filesystem, files), fmt, columns, uri)
    seen = 0
    for unit in plan_units(loc, files):
        for row in prepare_unit(loc, unit, mapping, preset, max_chars).to_pylist():
            if limit is not None and seen >= limit:
                return
            seen += 1
            yield row
