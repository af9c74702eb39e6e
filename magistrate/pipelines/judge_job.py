"""The batch job: plan units -> check ids -> judge units on an actor pool -> summary.

Ray Data schedules work units (pipelines/units.py) over a pool of judge actors; each
actor reads, validates, judges and publishes its unit whole. The driver holds only the
unit list (a few MB at 100M pairs), so its memory does not grow with the input.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from magistrate.pipelines.prepare import MAX_FIELD_CHARS
from magistrate.pipelines.sources import (
    InputError,
    Location,
    list_input_files,
    locate,
    resolve_mapping,
)
from magistrate.pipelines.units import UNIT_ROWS


class JobSettings(BaseModel):
    input: str
    output: str
    judge: str = "mt-bench"
    model: str | None = None
    mode: Literal["logprob", "generate"] | None = None
    order: Literal["both", "ab", "random"] = "both"
    seed: int = 0
    tensor_parallel_size: int = Field(1, ge=1)
    replicas: str = "1"
    gpu_type: str | None = None
    device: Literal["auto", "gpu", "cpu"] = "auto"
    batch_size: int = Field(64, ge=1)
    format: Literal["auto", "rewardbench", "llmbar", "standard"] = "auto"
    columns: str | None = None
    s3_endpoint_url: str | None = None
    overwrite: bool = False
    resume: bool = False
    unit_rows: int = Field(UNIT_ROWS, ge=1)
    max_tries: int = Field(3, ge=1)
    limit: int | None = Field(None, ge=1)
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    max_new_tokens: int | None = None
    max_field_chars: int = Field(MAX_FIELD_CHARS, ge=1)
    dry_run: bool = False
    gpu: str = "h100"  # for the dry run's GPU-hours estimate

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: str) -> str:
        replica_bounds(value)
        return value


def replica_bounds(spec: str) -> tuple[int, int]:
    """"2" -> (2, 2); "1:8" -> (1, 8)."""
    try:
        low, _, high = spec.partition(":")
        bounds = (int(low), int(high or low))
    except ValueError:
        raise ValueError(f"--replicas {spec!r}: give N or MIN:MAX") from None
    if bounds[0] < 1 or bounds[1] < bounds[0]:
        raise ValueError(f"--replicas {spec!r}: need 1 <= MIN <= MAX")
    return bounds


def connect_ray() -> None:
    """Join the cluster in RAY_ADDRESS (set by `ray job submit`; `local` forces a new one),
    else one started on this machine with `ray start`, else start a local Ray (Ray's own
    rule for `ray.init()`), except that a cluster which is gone is not waited for."""
    import os

    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    if address is None and (last := _last_started_cluster()) and not _answers(last):
        # A crashed or killed `ray start` leaves its address file behind, and ray.init()
        # would wait on that dead address for many minutes.
        print(f"magistrate: the Ray cluster last started here ({last}) is gone; "
              "starting a local Ray", file=sys.stderr)
        address = "local"
    ray.init(address=address, logging_level="WARNING")


def _last_started_cluster() -> str | None:
    try:
        from ray._private.services import find_bootstrap_address  # where `ray start` records it

        return find_bootstrap_address(None)
    except Exception:  # a Ray without it: leave the choice to ray.init()
        return None


def _answers(address: str, timeout: float = 2.0) -> bool:
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class Plan:
    """The input, located and cut into units."""

    units: list
    mapping: dict
    preset: str
    files: list[str]
    digest: str  # input_digest: what a resume must find unchanged
    src: Location


def plan(settings: JobSettings) -> Plan:
    from magistrate.pipelines.reading import peek_columns
    from magistrate.pipelines.units import apply_limit, plan_units

    src = locate(settings.input, settings.s3_endpoint_url)
    files = list_input_files(src)
    mapping, preset = resolve_mapping(peek_columns(src.filesystem, files), settings.format,
                                      settings.columns, settings.input)
    units = plan_units(src, files, settings.unit_rows)
    if settings.limit:
        units = apply_limit(src.filesystem, units, settings.limit)
    return Plan(units, mapping, preset, files, input_digest(src, files), src)


def input_digest(src: Location, files: list[str]) -> str:
    """The names and sizes of the input's files. Unit ids come from file names, row groups
    and byte ranges, so a resumed run over a changed input (a file added, a JSONL file
    appended to) would judge some rows twice or never: it is refused instead."""
    import hashlib

    digest = hashlib.sha256()
    for info in src.filesystem.get_file_info(files):
        digest.update(f"{info.path}\t{info.size}\n".encode())
    return digest.hexdigest()


def run(settings: JobSettings, progress=print) -> dict:
    """Judge every pair of the input and write verdicts; returns the summary. The output
    is written as a commit protocol (pipelines/commit.py)."""
    from magistrate.judges.registry import get_judge
    from magistrate.models import load_config, resolve_model
    from magistrate.pipelines.commit import refuse_input_inside
    from magistrate.pipelines.lease import Lease

    if settings.resume and settings.overwrite:
        raise InputError("--resume and --overwrite exclude each other")
    get_judge(settings.judge)  # an unknown judge fails here, not in an actor
    model = resolve_model(settings.model)
    load_config(model)  # a model that cannot be had fails here, not in every actor
    out = locate(settings.output, settings.s3_endpoint_url)
    # The input is located and planned before the output is touched: a mistyped --input
    # with --overwrite deletes nothing.
    planned = plan(settings)
    refuse_input_inside(out, planned.src, planned.files)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    with Lease.acquire(out, run_id, take_over_stale=settings.resume or settings.overwrite) as lease:
        return _run_leased(settings, progress, out, lease, run_id, model, planned)


def _run_leased(settings: JobSettings, progress, out: Location, lease, run_id: str, model: str,
                planned: Plan) -> dict:
    import dataclasses

    import ray

    from magistrate.actors.engine import EngineSettings
    from magistrate.actors.judge_actor import actor_resources, use_gpus
    from magistrate.judges.core import JudgeSettings
    from magistrate.pipelines.capacity import CapacityRequest, actor_bundle, cluster_nodes, plan_pool
    from magistrate.pipelines.commit import commit, open_output, reconcile, write_run_file
    from magistrate.pipelines.duplicates import duplicate_message, find_duplicate_ids
    from magistrate.pipelines.progress import ProgressPrinter
    from magistrate.pipelines.summary import summarise
    from magistrate.pipelines.unit_worker import UnitWorker
    from magistrate.pipelines.units import unit_files

    units, mapping, preset, files = planned.units, planned.mapping, planned.preset, planned.files
    resuming, found = open_output(settings, out, model, planned.digest, progress)
    redo = {unit_id for unit_id, f in found.items() if f.whole and f.written_off}
    todo = [dataclasses.replace(u, redo=u.unit_id in redo) for u in units
            if not (u.unit_id in found and found[u.unit_id].finished)]
    connect_ray()
    if not resuming:  # a resumed run's input passed this check before its _run.json was written
        duplicates = find_duplicate_ids(settings.input, settings.s3_endpoint_url, units, mapping, preset)
        if duplicates:
            raise InputError(duplicate_message(duplicates))
        write_run_file(settings, out, model, planned.digest)
    progress(f"magistrate: {len(files)} input file(s), {len(units)} units "
             f"({len(units) - len(todo)} already done"
             f"{f', {len(redo)} with written-off rows to judge again' if redo else ''}), "
             f"judge {settings.judge}, model {model}, run {run_id}")

    low, high = replica_bounds(settings.replicas)
    # A dry run needs no GPU, unless asked for one: `--dry-run --device gpu` rehearses a
    # GPU run's placement and autoscaling without starting an engine.
    gpus = settings.device == "gpu" if settings.dry_run else use_gpus(settings.device)
    resources = actor_resources(settings.tensor_parallel_size, gpus, settings.gpu_type)
    engine = EngineSettings(
        model=model, tensor_parallel_size=settings.tensor_parallel_size,
        max_model_len=settings.max_model_len, seed=settings.seed,
        gpu_memory_utilization=settings.gpu_memory_utilization,
    )
    judge = JudgeSettings(
        judge=settings.judge, mode=settings.mode, order=settings.order, seed=settings.seed,
        max_new_tokens=settings.max_new_tokens,
    )
    started = time.monotonic()
    # unit_seconds: time the actors spent on units (read, judge, write), engine start
    # excluded: pairs / unit_seconds is the warm rate of one actor.
    judged = {"units": 0, "pairs": 0, "errors": 0, "unit_seconds": 0.0}
    pending = todo
    for round_ in range(1, settings.max_tries + 1):
        if not pending:
            break
        if round_ > 1:
            progress(f"magistrate: {len(pending)} unit(s) not finished; retrying them "
                     f"(round {round_} of {settings.max_tries})")
        printer = ProgressPrinter(progress)
        # Sized from the cluster as it is now; the autoscaler is asked for the rest
        # (pipelines/capacity.py: how this avoids ray-project/ray#59144).
        pool = plan_pool((low, high), len(pending), actor_bundle(resources), cluster_nodes())
        progress(f"magistrate: {pool.describe()}")
        # Within a round, a unit whose actor dies is retried once on a restarted actor; a
        # unit still missing after the round (e.g. its node was lost before Ray noticed)
        # goes to the next round, on a fresh pool. Failed units never stop the job.
        ray.data.DataContext.get_current().max_errored_blocks = len(pending)
        ds = ray.data.from_items([u.as_row() for u in pending], override_num_blocks=len(pending))
        ds = ds.map_batches(
            UnitWorker,
            fn_constructor_kwargs={
                "input_uri": settings.input, "output_uri": settings.output,
                "endpoint": settings.s3_endpoint_url, "mapping": mapping, "preset": preset,
                "batch_size": settings.batch_size, "max_chars": settings.max_field_chars,
                "judge": {"engine": engine, "judge": judge, "run_id": run_id,
                          "dry_run": settings.dry_run, "progress": printer.counter,
                          "max_tries": settings.max_tries},
            },
            batch_format="pyarrow",
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(min_size=pool.min_size, max_size=pool.max_size,
                                               initial_size=pool.initial_size),
            max_restarts=-1,
            max_task_retries=1,
            **resources,
        )
        with printer, CapacityRequest(pool):
            for result in ds.iter_rows():
                judged["units"] += 1
                judged["pairs"] += result["rows"]
                judged["errors"] += result["errors"]
                judged["unit_seconds"] = round(judged["unit_seconds"] + result["seconds"], 3)
        # Done in this round: a whole file of this run (a written-off row in it waits for
        # --resume: the actor already tried its engine --max-tries times).
        now = unit_files(out, only={u.unit_id for u in pending})
        pending = [u for u in pending if not (u.unit_id in now and now[u.unit_id].whole
                                             and now[u.unit_id].run_id == run_id)]
    for unit in pending:
        if unit.redo:  # its earlier file stands, written-off rows and all
            continue
        write_failed_unit(settings, out, unit, mapping, preset, run_id, engine.model, judge)
        judged["failed_units"] = judged.get("failed_units", 0) + 1
    elapsed = time.monotonic() - started
    summary = summarise(out, elapsed, run_id=run_id, settings=settings.model_dump(), model=model,
                        this_run=judged, units=len(units), units_skipped=len(units) - len(todo))
    summary.update(reconcile(units, unit_files(out)).as_dict())
    # The rate of this run's own work, not of units a previous run finished.
    summary["pairs_per_second"] = round(judged["pairs"] / elapsed, 3) if elapsed > 0 else None
    if settings.dry_run:
        summary["estimate"] = dry_run_estimate(model, summary, settings.gpu)
    if lease.lost:  # another run owns the output now: commit nothing
        summary.update(complete=False, lease_lost=lease.lost)
        return summary
    commit(out, summary)
    return summary


def write_failed_unit(settings, out, unit, mapping, preset, run_id, model, judge) -> None:
    """A unit that failed all its rounds: its pairs become written-off error rows, which
    --resume judges again (its bad input rows stay error rows)."""
    from magistrate.judges.registry import get_judge
    from magistrate.pipelines.unit_worker import read_prepared_unit
    from magistrate.pipelines.units import publish
    from magistrate.schema import verdict_table

    table = read_prepared_unit(settings.input, settings.s3_endpoint_url, unit, mapping, preset,
                               settings.max_field_chars)
    message = (f"judging failed in {settings.max_tries} rounds (the judge actor or its node kept "
               "dying; see the Ray logs); fix the cause and rerun with --resume")
    rows = [{"winner": "error", "error": problem or message, "written_off": problem is None}
            for problem in table.column("_invalid").to_pylist()]
    profile = get_judge(judge.judge)
    verdicts = verdict_table(rows, {"judge": profile.name, "judge_version": profile.version,
                                    "mode": judge.mode or profile.default_mode, "order": judge.order,
                                    "model": model, "run_id": run_id})
    kept = table.drop_columns(["_invalid"])
    for field in verdicts.schema:
        kept = kept.append_column(field, verdicts.column(field.name))
    publish(out, unit.unit_id, kept, planned_rows=table.num_rows,
            metadata={"unit": unit.as_row(), "run_id": run_id, "failed": True})


def dry_run_estimate(model: str, summary: dict, gpu: str) -> dict:
    """GPU-hours for the real run, from the dry run's token totals."""
    from magistrate.models import load_config
    from magistrate.pipelines.estimate import gpu_hours, parameter_count

    params = parameter_count(load_config(model))
    return gpu_hours(params, summary["prompt_tokens"], summary["completion_tokens"], gpu)
