"""Escalation: the pairs a judge leaves undecided go to the next, bigger judge.

Each stage is a whole `magistrate judge` run (pipelines/judge_job.py) with its own actor
pool, resources and output, so each is exactly-once and resumable on its own; a cascade
only adds what lies between them and after them (docs/cascade.md):

    OUT/_cascade.json                  the cascade's settings (what a --resume must share)
    OUT/stages/<k>-<name>/             stage k's judge output (verdicts/, summary.json, ...)
    OUT/escalated/<k>-<name>/          stage k's input: per stage-1 unit, the pairs the stage
                                       before left undecided (<unit>-text.parquet, -chat.parquet)
    OUT/verdicts/<unit>.parquet        one row per pair: stage 1's input columns, the verdict
                                       of the stage that decided it, `decided_by`
    OUT/summary.json, OUT/_SUCCESS     the whole, with each stage's pairs, tokens and cost

Stage k's input files are derived from stage k-1's output, which is complete and no longer
changes, and each is written whole once: a resumed cascade finds the earlier stages
complete (their resume judges nothing) and goes on where it stopped. A final unit file is
rebuilt from its stage-1 unit file and the later stages' rows for that unit only, so
memory stays at one unit.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import uuid
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from magistrate.actors.placement import use_gpus
from magistrate.judges.core import JudgeSettings
from magistrate.judges.problems import validation_problems, yaml_problem
from magistrate.model_files import embedded_model_dir, load_config
from magistrate.pairs import PROMPT_MESSAGES
from magistrate.pipelines import judge_job
from magistrate.pipelines.judge_job import JudgeOptions, RunOptions
from magistrate.pipelines.commit import RUN_FILE, SUCCESS, SUMMARY, clear, commit, contents, reconcile
from magistrate.pipelines.estimate import gpu_hours, parameter_count
from magistrate.pipelines.lease import LEASE, Lease
from magistrate.pipelines.sources import InputError, Location, list_input_files, locate
from magistrate.pipelines.store import delete, exists, join, read_bytes, write_whole
from magistrate.pipelines.summary import summarise
from magistrate.pipelines.sharding import plan_units
from magistrate.pipelines.units import VERDICTS, publish, unit_files, unit_path
from magistrate.schema import MESSAGES, verdict_schema, verdict_table

CASCADE_FILE = "_cascade.json"
STAGES, ESCALATED = "stages", "escalated"
# The columns a stage's verdict replaces in the final row; the rest are stage 1's input.
_VERDICT_COLUMNS = verdict_schema(calibrated=True).names
_INPUT_COLUMNS = ("id", "prompt", "response_a", "response_b", "label")


class Stage(JudgeOptions):
    """One judge of a cascade: `magistrate judge`'s judge and engine options, and a name."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    params_billions: float | None = Field(None, gt=0, description="for `estimate` without the model's config")


class CascadeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stages: list[Stage] = Field(min_length=2)

    @model_validator(mode="after")
    def _stages_fit_together(self) -> "CascadeConfig":
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must differ: {', '.join(names)}")
        undecidable = [s.name for s in self.stages[:-1] if not s.calibration]
        if undecidable:
            raise ValueError(f"stage(s) {', '.join(undecidable)} need a calibration: a stage before the "
                             "last escalates the pairs its calibration leaves undecided")
        return self


def read_config(uri: str, endpoint_url: str | None = None) -> CascadeConfig:
    """A cascade file (YAML or JSON), or one clear InputError."""
    import yaml

    loc = locate(uri, endpoint_url)
    found = read_bytes(loc, loc.path)
    if found is None:
        raise InputError(f"{uri}: no such cascade file")
    try:
        return CascadeConfig.model_validate(yaml.safe_load(found[0]))
    except yaml.YAMLError as exc:
        raise InputError(f"{uri}: not YAML ({yaml_problem(exc)})") from None
    except ValidationError as exc:
        raise InputError(f"{uri} is not a magistrate cascade ({validation_problems(exc)})") from None


class CascadeSettings(RunOptions):
    config: CascadeConfig

    @field_validator("output")
    @classmethod
    def _output(cls, value: str) -> str:
        return value.rstrip("/")

    def record(self) -> dict:
        """What a resumed cascade must share with the one it continues."""
        return self.model_dump(include={"input", "config", "format", "columns", "unit_rows", "limit",
                                        "max_field_chars"})


def stage_uri(settings: CascadeSettings, kind: str, k: int) -> str:
    return f"{settings.output}/{kind}/{k + 1}-{settings.config.stages[k].name}"


def stage_job(settings: CascadeSettings, k: int, input_uri: str) -> judge_job.JobSettings:
    """Stage k as a judge job: the cascade's run options (the input's format and --limit
    for stage 1 only: later stages read the escalation files), the stage's judge options.

    A stage output with its `_run.json` is resumed. Magistrate's files without it (a job
    killed between taking its lease and writing that file, e.g. in its duplicate-id pass,
    leaves its lease and the input's staged pieces) hold no verdict of a run that got
    past its checks: the stage starts again over them, as an --overwrite, which takes over
    a stale lease (never a live one), reuses the staged pieces and deletes only
    magistrate's own files. Anything else there is refused by the job, as always."""
    out = locate(stage_uri(settings, STAGES, k), settings.s3_endpoint_url)
    run = settings.model_dump(exclude={"config", "input", "output", "overwrite", "resume"})
    if k:
        run.update(format="standard", columns=None, limit=None)
    resume = exists(out, join(out, RUN_FILE))
    again = not resume and bool(contents(out).own)
    return judge_job.JobSettings(input=input_uri, output=out.uri, resume=resume, overwrite=again, **run,
                                 **settings.config.stages[k].model_dump(exclude={"name", "params_billions"}))


def run(settings: CascadeSettings, progress=print, live=None) -> dict:
    """Judge every pair with the first stage, and each pair a stage leaves undecided with
    the next; write one row per pair and the summary. Returns the summary."""
    if settings.resume and settings.overwrite:
        raise InputError("--resume and --overwrite exclude each other")
    out = locate(settings.output, settings.s3_endpoint_url)
    src = locate(settings.input, settings.s3_endpoint_url)
    if src.is_s3 == out.is_s3 and any(f.startswith(out.path.rstrip("/") + "/") for f in list_input_files(src)):
        raise InputError(f"the output {out.uri} holds the input: give an output directory of its own")
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    started = time.monotonic()
    with Lease.acquire(out, run_id, take_over_stale=settings.resume or settings.overwrite) as lease:
        _open(settings, out, progress)
        stages, stage_input = [], settings.input
        for k, stage in enumerate(settings.config.stages):
            job = stage_job(settings, k, stage_input)
            progress(f"magistrate: stage {k + 1} of {len(settings.config.stages)} ({stage.name}): judge "
                     f"{stage.judge}" + (" (resuming its output)" if job.resume else
                                         " (starting it again: its last run stopped before its _run.json)"
                                         if job.overwrite else ""))
            summary = judge_job.run(job, progress=progress, live=live)
            if summary.get("lease_lost") and "pairs" not in summary:  # the stage's output is another run's now
                return {"complete": False, "stages": stages, "stopped_at": stage.name, "pairs": 0,
                        "lease_lost": summary["lease_lost"], "seconds": round(time.monotonic() - started, 2)}
            stages.append(_stage_figures(stage, job, summary, settings.gpu))
            if not summary.get("complete"):
                return _incomplete(out, settings, stages, summary, time.monotonic() - started)
            if k + 1 == len(settings.config.stages):
                break
            escalated = escalate(settings, k)
            stages[-1]["escalated"] = escalated
            progress(f"magistrate: stage {k + 1} ({stage.name}) decided {summary['pairs'] - escalated} of "
                     f"{summary['pairs']} pairs; {escalated} go to stage {k + 2}")
            if not escalated:
                break
            stage_input = stage_uri(settings, ESCALATED, k + 1)
        units = judge_job.planned_units(stage_job(settings, 0, settings.input))
        decided_by = merge(settings, units, len(stages))
        this_run = {key: sum(s[f"{key}_this_run"] for s in stages) for key in ("pairs", "units")}
        summary = summarise(out, time.monotonic() - started, run_id=run_id, cascade=settings.record(),
                            stages=stages, decided_by=decided_by, this_run=this_run,
                            units=len(units), units_skipped=0)
        summary.update(reconcile(units, unit_files(out)).as_dict())
        summary["embedded_judge"] = any(s["model"] == str(embedded_model_dir()) for s in stages)
        if lease.lost:
            return {**summary, "complete": False, "lease_lost": lease.lost}
        commit(out, summary)
        return summary


def _open(settings: CascadeSettings, out: Location, progress) -> None:
    """Check the output against --resume / --overwrite; deletes only what a cascade wrote."""
    record = read_bytes(out, join(out, CASCADE_FILE))
    found = _own_files(out)
    if record is None and not found.other:
        write_whole(out, join(out, CASCADE_FILE), json.dumps(settings.record(), indent=2).encode())
        return
    if record is None or found.foreign:
        what = found.foreign or found.other
        raise InputError(f"{out.uri} holds files a magistrate cascade did not write ({', '.join(what[:5])}); "
                         "magistrate never deletes or mixes with them: give a new or empty output directory")
    if settings.resume:
        before, now = json.loads(record[0]), json.loads(json.dumps(settings.record()))
        changed = [k for k in now if before.get(k) != now[k]]
        if changed:
            raise InputError(f"cannot resume {out.uri} with other settings ({', '.join(changed)} changed); "
                             "use the original settings, or --overwrite")
        delete(out, join(out, SUCCESS))
        return
    if not settings.overwrite:
        raise InputError(f"{settings.output} already holds a cascade: pass --resume to finish it, or "
                         "--overwrite to start again")
    stages = [locate(stage_uri(settings, STAGES, k), settings.s3_endpoint_url)
              for k in range(len(settings.config.stages))]
    held = [contents(stage) for stage in stages]
    for stage, found_there in zip(stages, held):  # every check before anything is deleted
        if found_there.foreign:
            raise InputError(f"{stage.uri} holds files magistrate did not write; nothing was deleted")
    for stage, found_there in zip(stages, held):
        clear(stage, found_there)
    for path in found.own:
        delete(out, path)
    progress(f"magistrate: --overwrite: deleted the {len(found.own)} file(s) an earlier cascade wrote in "
             f"{settings.output} besides its stages'")
    write_whole(out, join(out, CASCADE_FILE), json.dumps(settings.record(), indent=2).encode())


class _Found(NamedTuple):
    own: list[str]
    foreign: list[str]
    other: list[str]


_LEFTOVER = re.compile(r"^\.(.+?)(?:\.[0-9a-f]{8}\.tmp|\.lock)$")
_ESCALATED_NAME = re.compile(r"^unit-[0-9a-f]{16}(-first\d+)?-(text|chat)\.parquet$")


def _own_files(out: Location) -> _Found:
    """A cascade output's files: `own` (escalation inputs, final verdicts, summary; the stage
    outputs are judge outputs and checked as such), `foreign` (what a cascade never writes),
    `other` (anything there at all, the lease aside)."""
    fs, base = out.filesystem, out.path.rstrip("/")
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        return _Found([], [], [])
    own, foreign, other = [], [], []
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        if info.type == pafs.FileType.Directory:
            continue
        rel = info.path[len(base) + 1:]
        # A local write's staging or lock file counts as the file it is for (pipelines/store.py).
        leftover = _LEFTOVER.match(os.path.basename(rel))
        name = leftover.group(1) if leftover else os.path.basename(rel)
        if name == LEASE:
            continue
        other.append(rel)
        parts = rel.split("/")[:-1] + [name]
        if parts[0] == STAGES:
            continue
        if ((len(parts) == 1 and name in (CASCADE_FILE, SUMMARY, SUCCESS, "report.html"))
                or (parts[0] == VERDICTS and len(parts) == 2 and re.match(r"^unit-.*\.parquet$", name))
                or (parts[0] == ESCALATED and len(parts) == 3 and _ESCALATED_NAME.match(name))):
            own.append(info.path)
        else:
            foreign.append(rel)
    return _Found(own, foreign, other)


def _stage_figures(stage: Stage, job: judge_job.JobSettings, summary: dict, gpu: str) -> dict:
    """A stage's pairs, decisions, tokens and cost, for the cascade's summary. GPU-hours
    this run: the actors' busy time times their GPUs (0 on CPU); the estimate: from the
    stage's tokens on `gpu` (pipelines/estimate.py)."""
    run = summary.get("this_run", {})
    gpus = stage.tensor_parallel_size if use_gpus(stage.device) else 0
    params = (round(stage.params_billions * 1e9) if stage.params_billions
              else parameter_count(load_config(summary["model"])))
    estimate = gpu_hours(params, summary["prompt_tokens"], summary["completion_tokens"], gpu)
    return {
        "name": stage.name, "judge": stage.judge, "model": summary["model"],
        "mode": JudgeSettings(judge=stage.judge, mode=stage.mode).resolved().mode, "order": stage.order,
        "output": job.output,
        "pairs": summary["pairs"], "decided": (summary.get("calibrated") or {}).get("decided", summary["pairs"]),
        "escalated": 0, "prompt_tokens": summary["prompt_tokens"], "completion_tokens": summary["completion_tokens"],
        "pairs_this_run": run.get("pairs", 0), "units_this_run": run.get("units", 0),
        "actor_seconds_this_run": run.get("unit_seconds"), "gpus_per_actor": gpus,
        "gpu_hours_this_run": round((run.get("unit_seconds") or 0) * gpus / 3600, 4),
        f"gpu_hours_estimate_{gpu}": estimate["gpu_hours"],
    }


def _incomplete(out: Location, settings: CascadeSettings, stages: list, summary: dict, elapsed: float) -> dict:
    """A stage that did not finish: the cascade stops there, and says which to resume."""
    result = {"complete": False, "stages": stages, "stopped_at": stages[-1]["name"], "pairs": summary["pairs"],
              "lease_lost": summary.get("lease_lost"), "seconds": round(elapsed, 2)}
    write_whole(out, join(out, SUMMARY), json.dumps(result, indent=2, sort_keys=True).encode())
    return result


def escalation_files(settings: CascadeSettings, k: int) -> tuple[Location, dict[str, list[str]]]:
    """Stage k's (k >= 1) input: stage-1 unit id -> its escalation files (listed, not read)."""
    loc = locate(stage_uri(settings, ESCALATED, k), settings.s3_endpoint_url)
    selector = pafs.FileSelector(loc.path, recursive=False, allow_not_found=True)
    by_unit: dict[str, list[str]] = {}
    for info in loc.filesystem.get_file_info(selector):
        name = os.path.basename(info.path)
        if info.is_file and _ESCALATED_NAME.match(name):
            by_unit.setdefault(name.rsplit("-", 1)[0], []).append(info.path)
    return loc, by_unit


def stage_files(settings: CascadeSettings, k: int) -> tuple[Location, dict[str, list[str]]]:
    """Stage k's verdict files by stage-1 unit id (listed, not read): stage 1's unit files;
    a later stage's files of each unit's escalation files (one unit each: one row group)."""
    stage = locate(stage_uri(settings, STAGES, k), settings.s3_endpoint_url)
    if k == 0:
        return stage, {unit_id: [unit_path(stage, unit_id)] for unit_id in unit_files(stage)}
    loc, by_unit = escalation_files(settings, k)
    ids = {u.path: u.unit_id for u in plan_units(loc, [p for paths in by_unit.values() for p in paths],
                                                   settings.unit_rows)}
    return stage, {unit: [unit_path(stage, ids[p]) for p in sorted(paths)] for unit, paths in by_unit.items()}


def read_rows(loc: Location, paths: list[str]) -> pa.Table:
    tables = []
    for path in paths:
        with loc.filesystem.open_input_file(path) as f:
            tables.append(pq.read_table(f).replace_schema_metadata(None))
    return pa.concat_tables(tables, promote_options="permissive")


def undecided(table: pa.Table) -> pa.Array:
    """Rows the next stage judges: not decided, and judgeable (an input error, e.g. an empty
    prompt, is what it is at every stage: it stays with the stage that found it)."""
    names = table.column_names
    decided = pc.fill_null(table.column("decided"), False) if "decided" in names else pa.repeat(False, table.num_rows)
    judged_at_all = pc.fill_null(pc.not_equal(table.column("winner"), "error"), False)
    for order in ("ab", "ba"):  # an order the judge got to: an engine-side error, worth another judge
        judged_at_all = pc.or_(judged_at_all, pc.is_valid(table.column(f"{order}_prompt_tokens")))
        judged_at_all = pc.or_(judged_at_all, pc.is_valid(table.column(f"{order}_error")))
    return pc.and_(pc.invert(decided), judged_at_all)


def escalate(settings: CascadeSettings, k: int) -> int:
    """Write stage k+1's input from stage k's output: per stage-1 unit, the undecided pairs
    as one Parquet file of plain prompts and one of chat prompts (a column has one type).
    Files already there are kept (each was written whole). Returns the pairs escalated."""
    loc = locate(stage_uri(settings, ESCALATED, k + 1), settings.s3_endpoint_url)
    stage, files = stage_files(settings, k)
    total = 0
    for unit_id, paths in sorted(files.items()):
        table = read_rows(stage, paths)
        chosen = table.filter(undecided(table))
        total += chosen.num_rows
        if not chosen.num_rows:
            continue
        chat = pc.is_valid(chosen.column(PROMPT_MESSAGES)) if PROMPT_MESSAGES in chosen.column_names \
            else pa.repeat(False, chosen.num_rows)
        for kind, mask in (("text", pc.invert(chat)), ("chat", chat)):
            part = chosen.filter(mask)
            path = f"{loc.path.rstrip('/')}/{unit_id}-{kind}.parquet"
            if part.num_rows and not exists(loc, path):
                write_whole(loc, path, _input_bytes(part, kind == "chat"))
    return total


def _input_bytes(part: pa.Table, chat: bool) -> bytes:
    columns = {name: part.column(name) for name in _INPUT_COLUMNS if name in part.column_names}
    if chat:
        columns["prompt"] = part.column(PROMPT_MESSAGES).cast(MESSAGES)
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer, row_group_size=max(part.num_rows, 1))  # one unit per file
    return buffer.getvalue()


def merge(settings: CascadeSettings, units, stages_run: int) -> dict[str, int]:
    """The final unit files: stage 1's rows, each undecided one replaced by the verdict of
    the later stage that judged it last. Returns rows per deciding stage."""
    out = locate(settings.output, settings.s3_endpoint_url)
    names = [s.name for s in settings.config.stages]
    first, *later = [stage_files(settings, k) for k in range(stages_run)]
    counts = {name: 0 for name in names[:stages_run]}
    for unit in units:
        table = read_rows(first[0], first[1][unit.unit_id])
        rows = table.select([c for c in _VERDICT_COLUMNS if c in table.column_names]).to_pylist()
        by = [names[0]] * table.num_rows
        where = {pair_id: i for i, pair_id in enumerate(table.column("id").to_pylist())}
        for k, (stage, files) in enumerate(later, start=1):
            if unit.unit_id not in files:
                continue
            found = read_rows(stage, files[unit.unit_id])
            for pair_id, verdict in zip(found.column("id").to_pylist(),
                                        found.select([c for c in _VERDICT_COLUMNS if c in found.column_names]).to_pylist()):
                rows[where[pair_id]] = verdict
                by[where[pair_id]] = names[k]
        for name in by:
            counts[name] += 1
        verdicts = verdict_table(rows, {}, calibrated=True)
        final = table.drop_columns([c for c in _VERDICT_COLUMNS if c in table.column_names])
        for field in verdicts.schema:
            final = final.append_column(field, verdicts.column(field.name))
        final = final.append_column(pa.field("decided_by", pa.string()), pa.array(by, pa.string()))
        publish(out, unit.unit_id, final, planned_rows=table.num_rows,
                metadata={"unit": unit.as_row(), "run_id": "cascade"})
    return counts
