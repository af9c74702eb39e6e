"""The batch job: plan units -> check ids -> judge units on an actor pool -> summary.

Ray Data schedules work units (pipelines/units.py) over a pool of judge actors; each
actor reads, validates, judges and publishes its unit whole. The driver holds only the
unit list (a few MB at 100M pairs), so its memory does not grow with the input.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from magistrate.actors import metrics
from magistrate.actors.engine import EngineSettings, eager_for
from magistrate.actors.judge_host import START_TRIES, engine_failure_rows
from magistrate.actors.placement import actor_bundle, actor_resources, connect_ray, replica_bounds, shippable, use_gpus
from magistrate.judges.calibration import calibration_digest, calibration_mismatch
from magistrate.judges.core import JudgeSettings
from magistrate.model_files import check_model, embedded_model_dir, load_config, resolve_model
from magistrate.pairs import INVALID, MAX_FIELD_CHARS
from magistrate.pipelines.capacity import CapacityRequest, cluster_nodes, nodes_not_seeing, plan_pool
from magistrate.pipelines.commit import check_output, commit, prepare_output, reconcile, refuse_input_inside
from magistrate.pipelines.commit import fenced, runs_of, write_run_file
from magistrate.pipelines.duplicate_ids import duplicate_message, find_duplicate_ids
from magistrate.pipelines.estimate import gpu_hours, parameter_count
from magistrate.pipelines.lease import LEASE, Lease, LeaseLost, check_held
from magistrate.pipelines.prepare import prepare_unit
from magistrate.pipelines.progress import ProgressPrinter
from magistrate.pipelines.reading import peek_columns
from magistrate.pipelines.sources import InputError, Location, list_input, locate, read_calibration, resolve_mapping
from magistrate.pipelines.summary import summarise
from magistrate.pipelines.unit_worker import UNITS_AT_ONCE, UnitWorker
from magistrate.pipelines.sharding import as_recorded, input_identities, shard, staged_names
from magistrate.pipelines.units import UNIT_ROWS, Unit, apply_limit, damaged, publish, unit_files
from magistrate.schema import run_constants, with_verdicts


class JudgeOptions(BaseModel):
    """Which judge, and the engine and actors it runs on: a job's, or a cascade stage's."""

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
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    max_new_tokens: int | None = None
    min_label_mass: float = Field(0.0, ge=0, le=1)
    compilation: Literal["auto", "eager", "compiled"] = "auto"
    calibration: str | None = None  # a `magistrate calibrate` file (local or s3://): rows get p_a_calibrated etc.

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: str) -> str:
        replica_bounds(value)
        return value


class RunOptions(BaseModel):
    """Where pairs come from and verdicts go, and how the work is cut: a job's, or a cascade's."""

    input: str
    output: str
    format: Literal["auto", "rewardbench", "llmbar", "standard"] = "auto"
    columns: str | None = None
    s3_endpoint_url: str | None = None
    overwrite: bool = False
    resume: bool = False
    unit_rows: int = Field(UNIT_ROWS, ge=1)
    max_tries: int = Field(3, ge=1)
    limit: int | None = Field(None, ge=1)
    max_field_chars: int = Field(MAX_FIELD_CHARS, ge=1)
    gpu: str = "h100"  # for GPU-hours estimates (the dry run's, a cascade's stages')
    verbose: bool = False  # Ray Data's and vLLM's INFO logs on the terminal (docs/reliability.md#logs)


class JobSettings(JudgeOptions, RunOptions):
    dry_run: bool = False
    # The calibration file's content digest, set by `run`: a resume must apply the same map.
    calibration_digest: str | None = None


def covered_seconds(spans: list[tuple[float, float]]) -> float:
    """The length of the union of (start, end) intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


@dataclass(frozen=True)
class Plan:
    """The input, located (and, once `cut_units` ran, cut into units)."""

    units: list
    mapping: dict
    preset: str
    files: list[str]
    identities: dict  # each input file's content identity: what a resume must find unchanged
    src: Location
    skipped_note: str = ""  # files below the input's root it skips, said in the plan's first line


def plan_input(settings: JobSettings) -> Plan:
    """The input located, with its column mapping; not cut yet (`cut_units`)."""
    src = locate(settings.input, settings.s3_endpoint_url)
    listing = list_input(src)
    files = listing.files
    identities = input_identities(src, files)
    mapping, preset = resolve_mapping(peek_columns(as_recorded(src, identities).filesystem, files), settings.format,
                                      settings.columns, settings.input)
    return Plan([], mapping, preset, files, identities, src, listing.skipped_note)


def cut_units(settings: JobSettings, plan: Plan, out: Location, parallel: bool = False, progress=None) -> Plan:
    """The plan with its units (pipelines/sharding.py): staged pieces go to the output."""
    units = shard(plan.src, plan.files, settings.unit_rows, out, settings.s3_endpoint_url, parallel, progress,
                  plan.identities)
    if settings.limit:
        units = apply_limit(plan.src, units, settings.limit)
    return dataclasses.replace(plan, units=units)


def planned_units(settings: JobSettings) -> list[Unit]:
    """The units a job over these settings cut (its staged parts reused from its output)."""
    return cut_units(settings, plan_input(settings), locate(settings.output, settings.s3_endpoint_url)).units


def run(settings: JobSettings, progress=print, live=None) -> dict:
    """Judge every pair of the input and write verdicts; returns the summary. The output
    is written as a commit protocol (pipelines/commit.py). `live`: a terminal stream for a
    progress line rewritten in place (else plain lines through `progress`)."""
    if settings.resume and settings.overwrite:
        raise InputError("--resume and --overwrite exclude each other")
    # An unknown judge or a model that cannot be had fails here, not in every actor; the
    # resolved profile then travels with the job.
    calibration = settings.calibration and read_calibration(settings.calibration, settings.s3_endpoint_url)
    judge = JudgeSettings(judge=settings.judge, mode=settings.mode, order=settings.order,
                          seed=settings.seed, max_new_tokens=settings.max_new_tokens,
                          min_label_mass=settings.min_label_mass, calibration=calibration or None).resolved()
    judge = shippable(judge)
    model = resolve_model(settings.model)
    check_model(model)
    if calibration:
        settings = settings.model_copy(update={"calibration_digest": calibration_digest(calibration)})
        if mismatch := calibration_mismatch(calibration, judge, model):
            progress(f"magistrate: warning: {settings.calibration} was fitted on {mismatch}; "
                     "its confidences and decisions may not hold for this run")
    out = locate(settings.output, settings.s3_endpoint_url)
    # The input is located and planned before the output is touched: a mistyped --input
    # with --overwrite deletes nothing.
    planned = plan_input(settings)
    refuse_input_inside(out, planned.src, planned.files)
    job = Job(settings, planned, out, judge, model, time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
              live)
    with Lease.acquire(out, job.run_id, take_over_stale=settings.resume or settings.overwrite) as lease:
        job.lease = lease
        todo = job.open(progress)
        started = time.monotonic()
        judged, failed = job.rounds(todo, progress)
        if judged.get("engine_failed"):
            failed = []  # never judged, so not written off: --resume judges them once an engine starts
        try:
            check_held(out, job.run_id)  # another run owns the output now: write nothing more
            for unit in failed:
                job.write_off(unit)
            if failed:
                judged["failed_units"] = len(failed)
            summary = job.summary(judged, time.monotonic() - started, skipped=len(job.planned.units) - len(todo))
            if summary["complete"] and (job.resumed or judged.get("rounds", 1) > 1):
                # A resumed or retried run checks, id by id, that every input id is there once.
                summary = job.verified(summary, progress)
            check_held(out, job.run_id)
            commit(out, summary)
        except LeaseLost as exc:
            lease.lost = lease.lost or str(exc).split(" was taken by ", 1)[-1]
            return {"complete": False, "lease_lost": lease.lost, "this_run": judged}
        return summary


@dataclass
class Job:
    """One run over one output, with its lease held."""

    settings: JobSettings
    planned: Plan
    out: Location
    judge: JudgeSettings  # resolved
    model: str
    run_id: str
    live: object = None  # a terminal stream for the progress line, or None
    lease: Lease | None = None  # held while the job runs: its heartbeat says when it is lost
    adopted: dict = dataclasses.field(default_factory=dict)  # unit id -> run id of the files found at open
    resumed: bool = False

    @property
    def constants(self) -> dict:
        return run_constants(self.judge, self.model, self.run_id, self.settings.dry_run)

    def open(self, progress) -> list[Unit]:
        """Check the output (pipelines/commit.py), and the units this run judges: those
        without a finished file; a whole file with written-off rows is judged again in part.
        Every check that can refuse the run comes before anything is deleted."""
        opened = check_output(self.settings, self.out, self.model, self.planned.identities)
        connect_ray()
        quiet_ray_data(self.settings.verbose)
        if not self.out.is_s3 and (blind := nodes_not_seeing(f"{self.out.path}/{LEASE}", self.run_id)):
            raise InputError(f"{self.settings.output} is a local path that node(s) {', '.join(blind)} of this "
                             "cluster do not see (their actors would publish to their own disks): give an "
                             "s3:// output, or a filesystem mounted at the same path on every node")
        self.planned = cut_units(self.settings, self.planned, self.out, parallel=True, progress=progress)
        units = self.planned.units
        if not opened.resuming:  # a resumed run's input passed this check before its _run.json was written
            duplicates = find_duplicate_ids(self.settings.input, self.settings.output, self.settings.s3_endpoint_url,
                                            units, self.planned.mapping, self.planned.preset,
                                            self.settings.max_field_chars)
            if duplicates:
                raise InputError(duplicate_message(duplicates))
        found = prepare_output(self.settings, self.out, opened, progress, keep=staged_names(units))
        # The runs that held this output under these settings: a unit file of any other run
        # (one that lost the lease and published late) is not adopted, and is judged again.
        lineage = runs_of(self.out) if opened.resuming else []
        if lineage is not None:
            found = {u: f for u, f in found.items() if f.run_id in lineage}
        if opened.resuming:  # a unit file damaged since it was published is judged again
            broken = damaged(self.out, {u for u, f in found.items() if f.whole})
            found = {u: f for u, f in found.items() if u not in broken}
        self.adopted = {u: f.run_id for u, f in found.items()}
        self.resumed = opened.resuming
        write_run_file(self.settings, self.out, self.model, self.planned.identities, [*(lineage or []), self.run_id])
        redo = {unit_id for unit_id, f in found.items() if f.whole and f.written_off}
        todo = [dataclasses.replace(u, redo=u.unit_id in redo) for u in units
                if not (u.unit_id in found and found[u.unit_id].finished)]
        skipped = f" ({self.planned.skipped_note})" if self.planned.skipped_note else ""
        progress(f"magistrate: {len(self.planned.files)} input file(s){skipped}, {len(units)} units "
                 f"({len(units) - len(todo)} already done"
                 f"{f', {len(redo)} with written-off rows to judge again' if redo else ''}), "
                 f"judge {self.judge.judge}, model {self.model}, run {self.run_id}")
        return todo

    def resources(self) -> dict:
        """Ray options of one judge actor. A dry run needs no GPU unless asked for one:
        `--dry-run --device gpu` rehearses a GPU run's placement and autoscaling."""
        s = self.settings
        gpus = s.device == "gpu" if s.dry_run else use_gpus(s.device)
        return actor_resources(s.tensor_parallel_size, gpus, s.gpu_type)

    def rounds(self, todo: list[Unit], progress) -> tuple[dict, list[Unit]]:
        """Judge the units in up to --max-tries rounds; returns this run's counts and the
        units no round finished (never a redo unit: its earlier file stands)."""
        # unit_seconds: the time actors had at least one unit in hand (read, judge, write),
        # summed over actors, engine start excluded: an actor works on several units at
        # once, so their own times overlap. pairs / unit_seconds is one actor's warm rate.
        judged = {"units": 0, "pairs": 0, "errors": 0, "unit_seconds": 0.0}
        spans: dict = {}
        pending = todo
        for round_ in range(1, self.settings.max_tries + 1):
            if not pending or (self.lease is not None and self.lease.lost):
                break
            judged["rounds"] = round_
            if round_ > 1:
                progress(f"magistrate: {len(pending)} unit(s) not finished; retrying them "
                         f"(round {round_} of {self.settings.max_tries})")
                metrics.add("magistrate_units_retried", len(pending), judge=self.judge.judge)
            units_before, cannot_start = judged["units"], None
            for result in self._round(pending, progress):
                if result.get("lease_lost") and self.lease is not None:  # an actor found it taken
                    self.lease.lost = self.lease.lost or result["lease_lost"].split(" was taken by ", 1)[-1]
                if self.lease is not None and self.lease.lost:
                    break  # another run owns the output: stop the pool, write nothing more
                if result.get("engine_failed"):  # that actor's engine would not start: its unit waits
                    cannot_start = result["engine_failed"]
                    continue
                judged["units"] += 1
                judged["pairs"] += result["rows"]
                judged["errors"] += result["errors"]
                spans.setdefault(result["actor"], []).append((result["started"], result["ended"]))
            # Done in this round: a whole file of this run (a written-off row in it waits
            # for --resume: the actor already tried its engine --max-tries times).
            now = unit_files(self.out, only={u.unit_id for u in pending})
            pending = [u for u in pending if not (u.unit_id in now and now[u.unit_id].whole
                                                 and now[u.unit_id].run_id == self.run_id)]
            if cannot_start and judged["units"] == units_before:
                # No actor of the round started its engine: another round would only pay the
                # same refused starts again. The units stay unjudged (not written off).
                judged["engine_failed"] = cannot_start
                progress(f"magistrate: error: the judge engine could not start (each actor tried "
                         f"{START_TRIES} times): {cannot_start}")
                break
        judged["unit_seconds"] = round(sum(covered_seconds(s) for s in spans.values()), 3)
        judged["actors"] = len(spans)  # actors that judged at least one unit: how wide the work went
        return judged, [u for u in pending if not u.redo]

    def _round(self, pending: list[Unit], progress):
        """One pass of an actor pool over the units: each result row reports a unit."""
        import ray

        s, resources = self.settings, self.resources()
        # Sized from the cluster as it is now; the autoscaler is asked for the rest
        # (pipelines/capacity.py: how this avoids ray-project/ray#59144).
        pool = plan_pool(replica_bounds(s.replicas), len(pending), actor_bundle(resources), cluster_nodes())
        progress(f"magistrate: {pool.describe()}")
        printer = ProgressPrinter(progress, total=planned_rows(pending), live=self.live)
        pairs_per_engine = sum(max(u.rows, 0) for u in pending) // max(pool.max_size, 1)
        engine = EngineSettings(model=self.model, tensor_parallel_size=s.tensor_parallel_size,
                                max_model_len=s.max_model_len, seed=s.seed,
                                gpu_memory_utilization=s.gpu_memory_utilization, verbose=s.verbose,
                                enforce_eager=eager_for(s.compilation, pairs_per_engine))
        # Within a round, a unit whose actor dies is retried once on a restarted actor; a
        # unit still missing after the round (e.g. its node was lost before Ray noticed)
        # goes to the next round, on a fresh pool. Failed units never stop the job.
        ray.data.DataContext.get_current().max_errored_blocks = len(pending)
        ds = ray.data.from_items([u.as_row() for u in pending], override_num_blocks=len(pending))
        with warnings.catch_warnings():
            # max_task_retries has no named parameter in Ray 2.60, only the deprecated
            # **ray_remote_args; the retry-once rule above needs it.
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
            ds = self._map(ds, pool, engine, printer, resources)
        with printer, CapacityRequest(pool):
            yield from ds.iter_rows()
            printer.wait_for_engines()

    def _map(self, ds, pool, engine, printer, resources):
        import ray

        s = self.settings
        return ds.map_batches(
            UnitWorker,
            fn_constructor_kwargs={
                "input_uri": s.input, "output_uri": s.output, "endpoint": s.s3_endpoint_url,
                "mapping": self.planned.mapping, "preset": self.planned.preset,
                "batch_size": s.batch_size, "max_chars": s.max_field_chars,
                "judge": {"engine": engine, "judge": self.judge, "run_id": self.run_id,
                          "dry_run": s.dry_run, "progress": printer.counter, "max_tries": s.max_tries},
            },
            batch_format="pyarrow",
            batch_size=1,
            # Several units per actor at once (UnitWorker.__call__ is a coroutine): the
            # engine judges one unit's batches while another is read or published.
            compute=ray.data.ActorPoolStrategy(min_size=pool.min_size, max_size=pool.max_size,
                                               initial_size=pool.initial_size,
                                               max_concurrent_calls_per_actor=UNITS_AT_ONCE,
                                               max_tasks_in_flight_per_actor=UNITS_AT_ONCE + 1),
            max_restarts=-1,
            max_task_retries=1,
            **resources,
        )

    def write_off(self, unit: Unit) -> None:
        """A unit that failed all its rounds: its pairs become written-off error rows, which
        --resume judges again (its bad input rows stay error rows)."""
        s = self.settings
        check_held(self.out, self.run_id)
        already = unit_files(self.out, only={unit.unit_id}).get(unit.unit_id)
        if already is not None and already.whole and already.run_id == self.run_id:
            return  # a store that listed it late: the round did finish it; never replace it
        table = prepare_unit(self.planned.src, unit, self.planned.mapping, self.planned.preset,
                             s.max_field_chars, staging=self.out)
        message = (f"judging failed in {s.max_tries} rounds (the judge actor or its node kept "
                   "dying; see the Ray logs); fix the cause and rerun with --resume")
        rows = engine_failure_rows([{INVALID: p} for p in table.column(INVALID).to_pylist()], message)
        calibrated = self.judge.calibration is not None
        publish(self.out, unit.unit_id, with_verdicts(table, rows, self.constants, calibrated), planned_rows=table.num_rows,
                metadata={"unit": unit.as_row(), "run_id": self.run_id, "failed": True})

    def verified(self, summary: dict, progress) -> dict:
        """The summary with `magistrate verify`'s id-level check (pipelines/verify.py)."""
        from magistrate.pipelines.verify import verify_output

        progress("magistrate: checking every input id is in the output exactly once (the run resumed or retried)")
        checked = verify_output(self.settings.output, self.settings.s3_endpoint_url)
        summary = {**summary, "verify": checked}
        if not checked["complete"]:
            summary["complete"] = False
            wrong = [f"{kind} {found['count']}" for kind, found in checked.items()
                     if isinstance(found, dict) and found.get("count")]
            progress(f"magistrate: error: the output does not hold every input id exactly once: {', '.join(wrong)}")
        return summary

    def summary(self, judged: dict, elapsed: float, skipped: int) -> dict:
        s, units = self.settings, self.planned.units
        summary = summarise(self.out, elapsed, run_id=self.run_id, settings=s.model_dump(), model=self.model,
                            this_run=judged, units=len(units), units_skipped=skipped)
        counted = fenced(unit_files(self.out), self.run_id, self.adopted)
        counted = {u: f for u, f in counted.items() if u not in set(summary["damaged_units"])}
        summary.update(reconcile(units, counted).as_dict())
        # The rate of this run's own work, not of units a previous run finished.
        summary["pairs_per_second"] = round(judged["pairs"] / elapsed, 3) if elapsed > 0 else None
        summary["embedded_judge"] = self.model == str(embedded_model_dir())
        if s.dry_run:
            summary["estimate"] = dry_run_estimate(self.model, summary, s.gpu)
        return summary


def planned_rows(units: list[Unit]) -> int | None:
    """The rows these units hold (JSONL counts are estimates), for the progress line's
    ETA; None when a unit's count is unknown (CSV)."""
    counts = [u.max_rows if u.max_rows >= 0 else u.rows for u in units]
    return None if any(c < 0 for c in counts) else sum(counts)


def quiet_ray_data(verbose: bool) -> None:
    """Ray Data's console: warnings and errors only (its INFO lines, execution plans and
    a progress report every 10 s, stay in its ray-data.log), and no progress bars of its
    own: the job's progress line says what they would. --verbose keeps both."""
    import logging

    import ray.data
    from ray.util.debug import log_once

    if verbose:
        return
    ray.data.DataContext.get_current().enable_progress_bars = False
    # Ray Data warns once that its bars are off ("Progress bars disabled..."): they are
    # off on purpose here, so that once is spent now.
    log_once("ray_data_progress_manager_disabled")
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler":  # the console one; the file one keeps all
            handler.setLevel(logging.WARNING)


def dry_run_estimate(model: str, summary: dict, gpu: str) -> dict:
    """GPU-hours for the real run, from the dry run's token totals."""
    params = parameter_count(load_config(model))
    return gpu_hours(params, summary["prompt_tokens"], summary["completion_tokens"], gpu)
