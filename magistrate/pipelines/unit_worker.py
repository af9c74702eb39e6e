"""The Ray Data callable that judges whole units: read, prepare, judge, publish.

Ray Data schedules unit descriptors over a pool of these actors; each hosts one judge
engine (actors/judge_actor.py). An actor that dies is restarted by Ray and its unit
retried; since a unit is published whole or not at all, a retry never duplicates a row.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import pyarrow as pa

from magistrate.pipelines.prepare import prepare_batch
from magistrate.pipelines.sources import locate
from magistrate.pipelines.units import Unit, publish, read_unit


def read_prepared_unit(input_uri: str, endpoint: str | None, unit: Unit,
                       mapping: dict, preset: str) -> pa.Table:
    src = locate(input_uri, endpoint)
    table = prepare_batch(read_unit(src.filesystem, unit), mapping, preset,
                          json_lines=unit.kind == "json")
    return table.slice(0, unit.max_rows) if unit.max_rows >= 0 else table


class UnitWorker:
    def __init__(self, input_uri: str, output_uri: str, endpoint: str | None, mapping: dict,
                 preset: str, batch_size: int, judge: dict[str, Any]):
        from magistrate.actors.judge_actor import JudgeActor

        self.input_uri, self.endpoint = input_uri, endpoint
        self.out = locate(output_uri, endpoint)
        self.mapping, self.preset, self.batch_size = mapping, preset, batch_size
        self.judge = JudgeActor(**judge)

    def __call__(self, batch: pa.Table) -> pa.Table:
        results = []
        for row in batch.to_pylist():
            unit = Unit(**{f.name: row[f.name] for f in dataclasses.fields(Unit)})
            started = time.monotonic()
            table = read_prepared_unit(self.input_uri, self.endpoint, unit, self.mapping, self.preset)
            parts = [self.judge(table.slice(i, self.batch_size))
                     for i in range(0, table.num_rows, self.batch_size)]
            verdicts = pa.concat_tables(parts) if parts else self.judge(table)
            publish(self.out, unit.unit_id, verdicts, {"unit": row})
            errors = verdicts.column("winner").to_pylist().count("error")
            results.append({"unit_id": unit.unit_id, "rows": verdicts.num_rows, "errors": errors,
                            "seconds": time.monotonic() - started, "pid": os.getpid()})
        return pa.Table.from_pylist(results)
