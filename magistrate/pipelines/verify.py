"""`magistrate verify`: does an output hold each of its input's ids exactly once?

The footers a run reconciles count rows, and a row twice with another never looks whole
to them (issue 31: a re-shuffled input resumed, a unit replaced by a mixed-up write). This
check looks at the ids themselves. The input's ids, prepared as the run prepared them
(`_run.json` names the input and the settings that decide ids: format, columns,
--max-field-chars, --limit, --unit-rows), and the ids of every verdict file a reader
reads go through one distributed group-by (the duplicate-id pass's:
pipelines/duplicate_ids.py), so no process holds them all; an output of at most
IN_DRIVER_ROWS input rows is counted in this process, without Ray. Each reduce task passes on
only the ids not held exactly once by both sides, plus one tally row; the driver streams
those and keeps the counts and a few ids of each kind.

It only reads the output. The staged pieces a run cut (sharding.py) are read where they
are; a part the output no longer holds (or whose input file changed since) is cut again
in a temporary folder on this machine, and its units are then read on this node.
"""

from __future__ import annotations

import json
import os
import tempfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from magistrate.actors.placement import connect_ray
from magistrate.pipelines.commit import _BEFORE_KEY, RUN_FILE, SUCCESS
from magistrate.pipelines.duplicate_ids import IN_DRIVER_ROWS, group_by_id, id_pass, unit_ids
from magistrate.pipelines.judge_job import JobSettings, cut_units, plan_input, quiet_ray_data
from magistrate.pipelines.prepare import prepare_unit
from magistrate.pipelines.sharding import is_staged_file, staged_dir, staged_path
from magistrate.pipelines.sources import InputError, Location, locate
from magistrate.pipelines.store import exists, join, map_files, read_bytes, write_whole
from magistrate.pipelines.summary import verdict_files

# The _run.json keys that decide which ids the input holds.
_ID_KEYS = ("format", "columns", "unit_rows", "limit", "max_field_chars")
# Offending ids, by kind: (inputs, outputs) -> whether an id of those counts is one.
_KINDS = {
    "duplicates": lambda i, o: o > 1,  # in the output more than once
    "missing": lambda i, o: i > 0 and o == 0,  # an input id the output lacks
    "extra": lambda i, o: i == 0,  # an output id the input lacks
    "input_duplicates": lambda i, o: i > 1,  # the input itself holds it twice (judge refuses such input)
}


def verify_output(output_uri: str, endpoint_url: str | None = None, show: int = 10) -> dict:
    """Check that the output holds each input id exactly once. Returns `complete`, the
    counts (`ids_checked`: distinct ids of both sides; `input_rows`, `output_rows`,
    `verdict_files`) and, per kind of offending id (`duplicates`, `missing`, `extra`,
    `input_duplicates`), `{"count": N, "examples": [...]}` with up to `show` ids (with
    their counts for the duplicate kinds). Joins Ray (connect_ray: RAY_ADDRESS) when this
    process has not; reads only. InputError: no such output, or not one of magistrate."""
    out = locate(output_uri, endpoint_url)
    run = _run_record(out)
    settings = JobSettings(input=run["input"], output=output_uri, s3_endpoint_url=endpoint_url,
                           **{k: run.get(k, _BEFORE_KEY.get(k)) for k in _ID_KEYS if k in run or k in _BEFORE_KEY})
    try:
        plan = plan_input(settings)
    except InputError as exc:
        raise InputError(f"{output_uri}: cannot read its input {run['input']!r} (named in its {RUN_FILE}; "
                         f"a relative path is read from the current directory): {exc}") from None
    files = verdict_files(out)
    with tempfile.TemporaryDirectory(prefix="magistrate-verify-") as tmp:
        scratch = locate(tmp)
        _copy_manifests(out, scratch)
        units = cut_units(settings, plan, scratch).units
        recut = {u.unit_id for u in units if u.staged and os.path.exists(staged_path(scratch, u.staged))}
        rows = sum(max(u.rows, 0) for u in units)
        if all(u.rows >= 0 for u in units) and rows <= IN_DRIVER_ROWS:  # no Ray: counted here
            result = _tally([_offending(_counted_here(settings, plan, units, recut, scratch, files))], show)
        else:
            import ray

            if not ray.is_initialized():
                connect_ray()
                quiet_ray_data(verbose=False)
            with id_pass():
                sides = [_side(ds, 0) for ds in _input_ids(settings, plan, units, recut, tmp)]
                if files:
                    sides.append(_output_ids(files, output_uri, endpoint_url))
                # About as many output rows as input rows: both sides go through the group-by.
                result = _tally(_grouped(sides, 2 * rows), show)
    result.update(output=output_uri, input=run["input"], verdict_files=len(files),
                  success_marker=exists(out, join(out, SUCCESS)))
    return result


def _run_record(out: Location) -> dict:
    info = out.filesystem.get_file_info(out.path)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{out.uri}: no such output")
    if info.is_file:
        raise InputError(f"{out.uri} is a file, not an output directory")
    found = read_bytes(out, join(out, RUN_FILE))
    if found is None:
        cascade = exists(out, join(out, "_cascade.json"))
        cascade = " (a cascade's: verify its stages' outputs, under stages/)" if cascade else ""
        raise InputError(f"{out.uri}: not a magistrate output{cascade}: it has no {RUN_FILE}, which "
                         "names the input `magistrate judge --output` judged")
    try:
        record = json.loads(found[0])
        record["input"]
    except (ValueError, TypeError, KeyError):
        raise InputError(f"{out.uri}: its {RUN_FILE} is not one magistrate wrote (no input named)") from None
    return record


def _copy_manifests(out: Location, scratch: Location) -> None:
    """The output's staged parts' manifests into `scratch`: cutting the input there then
    finds the parts the run staged (their pieces are read from the output) and cuts only
    the others."""
    selector = pafs.FileSelector(staged_dir(out), recursive=False, allow_not_found=True)
    names = [os.path.basename(i.path) for i in out.filesystem.get_file_info(selector) if i.is_file]
    manifests = [n for n in names if n.endswith(".json") and not n.startswith(".") and is_staged_file(n)]
    for name, found in zip(manifests, map_files(out, lambda n: read_bytes(out, staged_path(out, n)), manifests)):
        if found is not None:
            write_whole(scratch, staged_path(scratch, name), found[0])


def _input_ids(settings: JobSettings, plan, units: list, recut: set[str], tmp: str) -> list:
    """The input's ids: units read in place or from the output's staged pieces anywhere in
    the cluster; units cut again here, on this node (their pieces are in `tmp`)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    common = (settings.input, settings.s3_endpoint_url, plan.mapping, plan.preset, settings.max_field_chars)
    datasets = []
    kept = [u for u in units if u.unit_id not in recut]
    if kept:
        datasets.append(unit_ids(kept, common[0], settings.output, *common[1:]))
    if recut:
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        datasets.append(unit_ids([u for u in units if u.unit_id in recut], common[0], tmp, *common[1:],
                                 scheduling_strategy=here))
    return datasets


def _counted_here(settings: JobSettings, plan, units: list, recut: set[str], scratch: Location,
                  files: list[str]) -> pa.Table:
    """Both sides' ids counted in this process, as the group-by's reduce gives them."""
    out = locate(settings.output, settings.s3_endpoint_url)
    inputs = [prepare_unit(plan.src, u, plan.mapping, plan.preset, settings.max_field_chars,
                           staging=scratch if u.unit_id in recut else out).column("id") for u in units]
    sides = [pa.table({"id": pa.chunked_array([c for i in inputs for c in i.chunks], pa.string()),
                       "output": pa.array([0] * sum(len(i) for i in inputs), pa.int64())})]
    if files:
        sides.append(_file_ids(pa.table({"path": files}), settings.output, settings.s3_endpoint_url))
    counted = pa.concat_tables(sides).group_by("id").aggregate([("output", "count"), ("output", "sum")])
    return counted.rename_columns({"output_count": "count()", "output_sum": "sum(output)"})


def _side(ds, output: int):
    return ds.map_batches(_with_side, fn_kwargs={"output": output}, batch_format="pyarrow")


def _with_side(batch: pa.Table, output: int) -> pa.Table:
    return pa.table({"id": batch.column("id"), "output": pa.array([output] * batch.num_rows, pa.int64())})


def _output_ids(files: list[str], output_uri: str, endpoint: str | None):
    """The id column of every verdict file, read in tasks, a few files a call."""
    import ray

    ds = ray.data.from_items([{"path": p} for p in files], override_num_blocks=max(1, min(len(files), 256)))
    return ds.map_batches(_file_ids, fn_kwargs={"output_uri": output_uri, "endpoint": endpoint},
                          batch_format="pyarrow", batch_size=8)


def _file_ids(batch: pa.Table, output_uri: str, endpoint: str | None) -> pa.Table:
    loc = locate(output_uri, endpoint)
    ids = []
    for path in batch.column("path").to_pylist():
        try:
            with loc.filesystem.open_input_file(path) as f:
                ids.append(pq.read_table(f, columns=["id"]).column("id").cast(pa.string()))
        except (OSError, pa.ArrowException, KeyError) as exc:
            raise InputError(f"{path}: cannot read its ids ({exc})") from None
    column = pa.chunked_array([c for i in ids for c in i.chunks], pa.string())
    return pa.table({"id": column, "output": pa.array([1] * len(column), pa.int64())})


def _offending(batch: pa.Table) -> pa.Table:
    """A reduced batch (id, count(), sum(output)) -> the ids not held exactly once on each
    side, and one tally row (id null) with the batch's distinct ids and rows per side."""
    outputs = batch.column("sum(output)")
    inputs = pc.subtract(batch.column("count()"), outputs)
    bad = pc.or_(pc.not_equal(inputs, 1), pc.not_equal(outputs, 1))
    rows = pa.table({"id": batch.column("id"), "inputs": inputs, "outputs": outputs,
                     "ids": pa.array([1] * batch.num_rows, pa.int64())}).filter(bad)
    tally = pa.table({"id": pa.array([None], pa.string()), "inputs": [pc.sum(inputs).as_py() or 0],
                      "outputs": [pc.sum(outputs).as_py() or 0], "ids": [batch.num_rows]},
                     schema=rows.schema)
    return pa.concat_tables([rows, tally])


def _grouped(sides: list, rows: int):
    """The offending ids and tallies of both sides, from the distributed group-by."""
    from ray.data.aggregate import Count, Sum

    both = sides[0].union(*sides[1:]) if len(sides) > 1 else sides[0]
    grouped = group_by_id(both, rows).aggregate(Count(), Sum("output"))
    return grouped.map_batches(_offending, batch_format="pyarrow").iter_batches(batch_format="pyarrow")


def _tally(batches, show: int) -> dict:
    """The counts and a few ids of each kind, from _offending's batches."""
    kinds = {k: {"count": 0, "examples": []} for k in _KINDS}
    totals = {"ids": 0, "inputs": 0, "outputs": 0}
    for batch in batches:
        for row in batch.to_pylist():
            if row["id"] is None:
                for key in totals:
                    totals[key] += row[key]
                continue
            for kind, holds in _KINDS.items():
                if holds(row["inputs"], row["outputs"]):
                    kinds[kind]["count"] += 1
                    if len(kinds[kind]["examples"]) < show:
                        times = row["outputs"] if kind == "duplicates" else row["inputs"]
                        kinds[kind]["examples"].append([row["id"], times] if "duplicates" in kind else row["id"])
    for found in kinds.values():
        found["examples"].sort()
    return {"complete": not any(k["count"] for k in kinds.values()), "ids_checked": totals["ids"],
            "input_rows": totals["inputs"], "output_rows": totals["outputs"], **kinds}
