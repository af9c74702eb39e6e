"""Duplicate ids, found before any judging: a distributed group-by over the ids, so no
single process ever holds them all. Only the duplicates (at most a few) reach the driver."""

from __future__ import annotations

import pyarrow as pa

from magistrate.pipelines.prepare import prepare_unit
from magistrate.pipelines.sources import locate
from magistrate.pipelines.units import Unit


def _unit_ids(batch: pa.Table, input_uri: str, output_uri: str, endpoint: str | None, mapping: dict,
              preset: str, max_chars: int) -> pa.Table:
    src, out = locate(input_uri, endpoint), locate(output_uri, endpoint)
    # The actors' own max_chars: a row's derived id depends on whether it has a problem.
    tables = [prepare_unit(src, Unit.from_row(row), mapping, preset, max_chars, staging=out).select(["id"])
              for row in batch.to_pylist()]
    return pa.concat_tables(tables)


def find_duplicate_ids(input_uri: str, output_uri: str, endpoint: str | None, units: list[Unit], mapping: dict,
                       preset: str, max_chars: int, show: int = 10) -> list[tuple[str, int]]:
    import ray
    from ray.data.expressions import col

    ds = ray.data.from_items([u.as_row() for u in units], override_num_blocks=max(1, min(len(units), 256)))
    ids = ds.map_batches(_unit_ids, fn_kwargs={"input_uri": input_uri, "output_uri": output_uri, "endpoint": endpoint,
                                               "mapping": mapping, "preset": preset, "max_chars": max_chars},
                         batch_format="pyarrow", batch_size=1)
    # Few units need few partitions; Ray's default (200) means 200 reduce tasks.
    # An expression, not a Python function: Arrow evaluates it (and Ray Data stops warning).
    counts = ids.groupby("id", num_partitions=max(1, min(len(units), 200))).count().filter(expr=col("count()") > 1)
    return [(r["id"], r["count()"]) for r in counts.take(show)]


def duplicate_message(found: list[tuple[str, int]]) -> str:
    shown = ", ".join(f"{i!r} ({n} times)" for i, n in found)
    return (f"duplicate ids in the input: {shown}{' and more' if len(found) >= 10 else ''}. "
            "Each id must be unique: fix the input, or drop the id column so ids are derived "
            "from content (identical pairs then share an id too).")
