"""Duplicate ids, found before any judging: a distributed group-by over the ids, so no
single process ever holds them all. Only the duplicates (at most a few) reach the driver.
`magistrate verify` (pipelines/verify.py) groups the input's and the output's ids the same way."""

from __future__ import annotations

import contextlib
from collections import Counter

import pyarrow as pa

from magistrate.pipelines.prepare import prepare_unit
from magistrate.pipelines.sources import locate
from magistrate.pipelines.units import Unit


def _unit_ids(batch: pa.Table, input_uri: str, staging_uri: str, endpoint: str | None, mapping: dict,
              preset: str, max_chars: int) -> pa.Table:
    src, staging = locate(input_uri, endpoint), locate(staging_uri, endpoint)
    # The actors' own max_chars: a row's derived id depends on whether it has a problem.
    tables = [prepare_unit(src, Unit.from_row(row), mapping, preset, max_chars, staging=staging).select(["id"])
              for row in batch.to_pylist()]
    return pa.concat_tables(tables)


def unit_ids(units: list[Unit], input_uri: str, staging_uri: str, endpoint: str | None, mapping: dict,
             preset: str, max_chars: int, **ray_remote_args):
    """The ids of these units' prepared pairs, as the actors prepare them, as a Ray dataset
    of one column, `id`: each unit read and prepared in a task (`staging_uri`: where the
    units' staged pieces are, the output; sharding.py)."""
    import ray

    ds = ray.data.from_items([u.as_row() for u in units], override_num_blocks=max(1, min(len(units), 256)))
    return ds.map_batches(_unit_ids, fn_kwargs={"input_uri": input_uri, "staging_uri": staging_uri,
                                                "endpoint": endpoint, "mapping": mapping, "preset": preset,
                                                "max_chars": max_chars},
                          batch_format="pyarrow", batch_size=1, **ray_remote_args)


ROWS_PER_PARTITION = 250_000
# What one map task of the group-by takes in at most. Ray's default (1 GiB) put all of a
# 10M-row check's ids in one or two map tasks of 3.5 GB each (docs/performance.md).
MAP_INPUT_BYTES = 64 << 20


@contextlib.contextmanager
def id_pass():
    """Ray Data's settings for a pass over every id, for the datasets made inside it (each
    takes a copy of the context when it is made): map tasks of the group-by that take in
    at most MAP_INPUT_BYTES, so a worker's memory does not grow with the input; and no
    block may fail (a judge round tolerates failed blocks, and an id lost here would be
    an id not checked)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    before = context.shuffle_input_batch_bytes, context.max_errored_blocks
    context.shuffle_input_batch_bytes, context.max_errored_blocks = MAP_INPUT_BYTES, 0
    try:
        yield
    finally:
        context.shuffle_input_batch_bytes, context.max_errored_blocks = before


def group_by_id(ds, rows: int):
    """`ds` (about `rows` rows) grouped by its `id` column in a distributed group-by: hash
    partitions of about ROWS_PER_PARTITION rows, each reduced in its own task, so no process
    holds every id. Ray's default (200 partitions) costs 200 reduce tasks however few the rows."""
    return ds.groupby("id", num_partitions=max(1, min(-(-rows // ROWS_PER_PARTITION), 200)))


# An input of at most this many rows is checked in the driver: a Ray Data pass pays its
# tasks' start-up whatever the rows, more than the check itself costs at this size
# (docs/performance.md: the duplicate-id pass of a small input).
IN_DRIVER_ROWS = 20_000


def find_duplicate_ids(input_uri: str, output_uri: str, endpoint: str | None, units: list[Unit], mapping: dict,
                       preset: str, max_chars: int, show: int = 10) -> list[tuple[str, int]]:
    from ray.data.expressions import col

    if all(u.rows >= 0 for u in units) and sum(u.rows for u in units) <= IN_DRIVER_ROWS:
        src, staging = locate(input_uri, endpoint), locate(output_uri, endpoint)
        counts = Counter(i for unit in units
                         for i in prepare_unit(src, unit, mapping, preset, max_chars, staging=staging)
                         .column("id").to_pylist())
        return [(i, n) for i, n in counts.items() if n > 1][:show]

    with id_pass():
        ids = unit_ids(units, input_uri, output_uri, endpoint, mapping, preset, max_chars)
        # An expression, not a Python function: Arrow evaluates it (and Ray Data stops warning).
        counts = group_by_id(ids, sum(max(u.rows, 0) for u in units)).count().filter(expr=col("count()") > 1)
        return [(r["id"], r["count()"]) for r in counts.take(show)]


def duplicate_message(found: list[tuple[str, int]]) -> str:
    shown = ", ".join(f"{i!r} ({n} times)" for i, n in found)
    return (f"duplicate ids in the input: {shown}{' and more' if len(found) >= 10 else ''}. "
            "Each id must be unique: fix the input, or drop the id column so ids are derived "
            "from content (identical pairs then share an id too).")
