"""One output, one schema to read it by: units are written independently, and a JSONL
passthrough column can be typed differently from unit to unit; every magistrate reader
(summary, report, select, leaderboard) reads all files under one unified schema."""

from __future__ import annotations

import asyncio
import itertools
import json

import pyarrow as pa
import pyarrow.parquet as pq

from magistrate.pipelines.sources import locate
from magistrate.pipelines.summary import unified_schema, verdict_dataset, verdict_files
from tests.conftest import invoke_cli, run_cli


def test_units_with_differently_typed_passthrough_columns_read_as_one(tmp_path, embedded_model, shared_ray):
    rows = []
    for i in range(3000):
        row = {"id": f"p{i}", "prompt": f"What is {i} plus {i}? " + "Explain. " * 6,
               "response_a": f"{2 * i}.", "response_b": f"Maybe {i}."}
        # First half: score is int and note all null; then float scores and text notes
        # (units are cut by bytes, about 1000 rows each).
        row.update(score=i, note=None) if i < 1500 else row.update(score=i + 0.5, note=f"n{i}")
        rows.append(row)
    src, out = tmp_path / "pairs.jsonl", tmp_path / "out"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = run_cli("judge", "--input", str(src), "--output", str(out), "--dry-run", "--order", "ab",
                   "--unit-rows", "1000", env=shared_ray.join())
    assert done.returncode == 0, done.stderr[-3000:]
    loc = locate(str(out), None)
    files = verdict_files(loc)
    kinds = {(str(pq.read_schema(f).field("score").type), str(pq.read_schema(f).field("note").type))
             for f in files}
    assert len(kinds) > 1, f"the units' schemas differ, as the test intends: {kinds}"
    for order in itertools.permutations(files):  # whichever file comes first
        table = verdict_dataset(loc, list(order)).to_table()
        got = dict(zip(table.column("id").to_pylist(), zip(table.column("score").to_pylist(),
                                                           table.column("note").to_pylist())))
        assert len(got) == 3000
        assert got["p7"] == (7, None) and got["p2000"] == (2000.5, "n2000")
    report = invoke_cli("report", str(out), "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    figures = json.loads(report.stdout)
    assert figures["pairs"] == 3000 and figures["unjudged"] == 3000  # a dry run judges nothing


def test_types_that_cannot_be_promoted_are_read_as_text():
    schema = unified_schema([pa.schema([("x", pa.int64()), ("y", pa.null())]),
                             pa.schema([("x", pa.string()), ("y", pa.float64())]),
                             pa.schema([("z", pa.bool_())])])
    assert schema == pa.schema([("x", pa.string()), ("y", pa.float64()), ("z", pa.bool_())])


def test_run_constants_are_one_definition_for_judged_and_written_off_rows(tmp_path, embedded_model):
    """A dry run's rows (the judge host's path, as in every actor) and the rows the driver
    writes off for a unit that failed every round carry the same run constants
    (schema.run_constants): once they disagreed, the written-off rows saying `logprob`."""
    from magistrate.actors.engine import EngineSettings
    from magistrate.actors.judge_host import JudgeHost
    from magistrate.judges.core import JudgeSettings
    from magistrate.pipelines.judge_job import Job, JobSettings, cut_units, plan_input
    from magistrate.pipelines.lease import Lease
    from magistrate.pipelines.prepare import prepare_unit
    from magistrate.schema import RUN_CONSTANTS

    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"What is {i}?", "response_a": f"{i}.",
                                       "response_b": "No."}) + "\n" for i in range(3)))
    settings = JobSettings(input=str(src), output=str(tmp_path / "failed"), dry_run=True, judge="skywork")
    judge = JudgeSettings(judge="skywork").resolved()
    planned = cut_units(settings, plan_input(settings), locate(settings.output))
    job = Job(settings, planned, locate(settings.output), judge, embedded_model, "run-1")
    host = JudgeHost(EngineSettings(model=embedded_model), judge, "run-1", dry_run=True)
    judged = []
    with Lease.acquire(job.out, "run-1", take_over_stale=False):  # the driver writes off under its lease
        for unit in job.planned.units:
            judged += asyncio.run(host(prepare_unit(job.planned.src, unit, job.planned.mapping,
                                                    job.planned.preset))).to_pylist()
            job.write_off(unit)
    written_off = verdict_dataset(job.out, verdict_files(job.out)).to_table().to_pylist()
    assert len(written_off) == len(judged) == 3 and all(r["written_off"] for r in written_off)
    assert not any(r["written_off"] for r in judged)
    constants = {tuple(r[k] for k in RUN_CONSTANTS) for r in judged + written_off}
    assert constants == {("skywork-critic", 1, "dry-run", "both", embedded_model, "run-1")}
