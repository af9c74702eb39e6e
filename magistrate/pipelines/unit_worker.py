"""The Ray Data callable that judges whole units: read, prepare, judge, publish.

Ray Data schedules unit descriptors over a pool of these actors; each hosts one judge
engine (actors/judge_host.py). An actor that dies is restarted by Ray and its unit
retried; since a unit is published whole or not at all, a retry never duplicates a row.
A unit marked `redo` has a file whose written-off rows (engine or actor failures of an
earlier run) are judged again; its other rows are kept as they are.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from magistrate import faults
from magistrate.actors.judge_host import EngineStartFailed, JudgeHost
from magistrate.pairs import MAX_FIELD_CHARS
from magistrate.pipelines.lease import LeaseLost, check_held
from magistrate.pipelines.prepare import prepare_unit
from magistrate.pipelines.sources import locate
from magistrate.pipelines.units import Unit, publish, unit_path


# Units an actor works on at once: one being judged, one being read or published, and
# one more, so the engine's queue never runs dry between units.
UNITS_AT_ONCE = 3


class UnitWorker:
    """Judges the units Ray Data gives it. Its `__call__` is a coroutine, and the pool
    runs UNITS_AT_ONCE calls per actor (judge_job.py), so while one unit is read and
    prepared, or published, the others' batches keep the engine busy; a unit's batches
    all go to the engine at once, which schedules them continuously."""

    def __init__(self, input_uri: str, output_uri: str, endpoint: str | None, mapping: dict,
                 preset: str, batch_size: int, judge: dict[str, Any], max_chars: int = MAX_FIELD_CHARS):
        self.src = locate(input_uri, endpoint)
        self.out = locate(output_uri, endpoint)
        self.mapping, self.preset, self.batch_size, self.max_chars = mapping, preset, batch_size, max_chars
        self.run_id = judge["run_id"]
        self.judge = JudgeHost(**judge)

    def __del__(self):
        # Ray Data releases a pool actor gracefully once the dataset is consumed
        # (MapWorker.__ray_shutdown__ drops this object): stop the engine here, while the
        # driver waits for it, not when the process is torn down after the summary.
        judge = getattr(self, "judge", None)
        if judge is not None:
            judge.close()

    async def _judge(self, table: pa.Table) -> pa.Table:
        parts = await asyncio.gather(*(self.judge(table.slice(i, self.batch_size))
                                       for i in range(0, table.num_rows, self.batch_size)))
        return pa.concat_tables(parts) if parts else await self.judge(table)

    async def _redo(self, unit: Unit, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        """The unit's earlier file with its written-off rows judged again, and those rows.
        Row i of a unit file is row i of the prepared unit (units are judged in order)."""
        old = await asyncio.to_thread(self._read_published, unit)
        if old.num_rows != table.num_rows or "written_off" not in old.column_names:
            fresh = await self._judge(table)
            return fresh, fresh
        flags = pc.fill_null(old.column("written_off"), False)
        again = pc.indices_nonzero(flags)
        kept = pc.indices_nonzero(pc.invert(flags))
        fresh = await self._judge(table.take(again))
        merged = pa.concat_tables([old.take(kept).replace_schema_metadata(None), fresh],
                                  promote_options="permissive")
        position = pa.concat_arrays([kept, again])  # where each merged row sat in the unit
        return merged.take(pc.sort_indices(position)), fresh

    def _read_published(self, unit: Unit) -> pa.Table:
        with self.out.filesystem.open_input_file(unit_path(self.out, unit.unit_id)) as f:
            return pq.read_table(f)

    async def __call__(self, batch: pa.Table) -> pa.Table:
        results = []
        for row in batch.to_pylist():
            try:
                results.append(await self._unit(row))
            except EngineStartFailed as exc:  # told to the driver, which stops when no engine starts
                results.append({"unit_id": row["unit_id"], "rows": 0, "errors": 0, "engine_failed": str(exc),
                                "actor": f"{socket.gethostname()}:{os.getpid()}"})
        return pa.Table.from_pylist(results)

    async def _unit(self, row: dict) -> dict:
        """Judge and publish one unit; its result row."""
        unit = Unit.from_row(row)
        await self.judge.ready()  # engine start is not a unit's time (summary: unit_seconds)
        started = time.time()
        # Reading and publishing are I/O and Arrow work off the event loop, beside the
        # engine's work for the other units in flight.
        table = await asyncio.to_thread(prepare_unit, self.src, unit, self.mapping, self.preset, self.max_chars,
                                        self.out)
        if unit.redo:
            verdicts, judged = await self._redo(unit, table)
        else:
            verdicts = judged = await self._judge(table)
        async with faults.step_async("publish"):
            # Fenced: a run whose lease was taken publishes nothing more (pipelines/lease.py);
            # the driver, told, stops the pool.
            try:
                await asyncio.to_thread(check_held, self.out, self.run_id)
            except LeaseLost as exc:
                return {"unit_id": unit.unit_id, "rows": 0, "errors": 0, "lease_lost": str(exc)}
            await asyncio.to_thread(publish, self.out, unit.unit_id, verdicts, planned_rows=table.num_rows,
                                    metadata={"unit": row, "run_id": self.run_id})
        errors = judged.column("winner").to_pylist().count("error")
        ended = time.time()
        return {"unit_id": unit.unit_id, "rows": judged.num_rows, "errors": errors,
                "seconds": ended - started, "started": started, "ended": ended,
                "actor": f"{socket.gethostname()}:{os.getpid()}"}
