"""The output directory as a commit protocol, the way Hadoop and Spark commit jobs.

- One live writer: the lease (pipelines/lease.py).
- A unit is visible under its final name only whole, with its planned rows in its footer
  (pipelines/units.py, pipelines/store.py).
- What failed for infrastructure reasons is written off, not final: `--resume` judges it
  again; bad input rows are data and stay error rows.
- `summary.json` is written whole after reconciling the rows written with the rows
  planned, and `_SUCCESS` last, only when every unit is present, whole and has nothing
  written off: a reader that sees `_SUCCESS` has the complete output.
- Nothing deletes a file magistrate did not write: `--overwrite` removes only the names
  below, and refuses an output that holds anything else or holds the input.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import pyarrow.fs as pafs

from magistrate.pipelines.lease import LEASE
from magistrate.pipelines.sources import InputError, Location
from magistrate.pipelines.store import delete, join, write_whole
from magistrate.pipelines.store import read_bytes
from magistrate.pipelines.units import VERDICTS, Unit, UnitFile, is_staging_file, is_unit_file, verdicts_dir
from magistrate.pipelines.units import clean_staging, unit_files
from magistrate.pipelines.sharding import STAGED, is_staged_file, staged_dir

RUN_FILE = "_run.json"
SUCCESS = "_SUCCESS"
SUMMARY = "summary.json"
REPORT = "report.html"  # `magistrate report`'s default page
OWN_FILES = (RUN_FILE, LEASE, SUCCESS, SUMMARY, REPORT)
# A local staging file of one of the above, the lease's lock file (pipelines/store.py), or
# a stale lease set aside by a take-over of magistrate before the lock.
_OWN_LEFTOVER = re.compile(r"^\.(%s)\.[0-9a-f]{8}\.tmp$|^\.%s\.lock$|^%s\.stale-\d+$" % (
    "|".join(re.escape(n) for n in OWN_FILES), re.escape(LEASE), re.escape(LEASE)))
_LEASE_LOCK = f".{LEASE}.lock"


@dataclass(frozen=True)
class Contents:
    own: list[str]  # paths of files magistrate wrote
    foreign: list[str]  # names (relative to the output) of everything else

    def holds_output(self) -> bool:
        """Anything of a run, the lease of a run in progress and the input's staged
        pieces (sharding.py: a copy of input, no verdicts) aside."""
        return any(os.path.basename(p) not in (LEASE, _LEASE_LOCK) and not _is_staged(p) for p in self.own)


def contents(loc: Location) -> Contents:
    """What an output directory holds, split into magistrate's files and the rest."""
    fs = loc.filesystem
    info = fs.get_file_info(loc.path)
    if info.is_file:
        raise InputError(f"{loc.uri} is a file, not an output directory")
    if info.type == pafs.FileType.NotFound:
        return Contents([], [])
    own, foreign = [], []
    base = loc.path.rstrip("/")
    for item in fs.get_file_info(pafs.FileSelector(base, recursive=False)):
        name = os.path.basename(item.path)
        if name == VERDICTS and item.type == pafs.FileType.Directory:
            for inner in fs.get_file_info(pafs.FileSelector(verdicts_dir(loc), recursive=True)):
                if inner.type == pafs.FileType.Directory:
                    continue
                leaf = os.path.basename(inner.path)
                relative = inner.path[len(base) + 1:]
                if os.path.dirname(relative) == VERDICTS and (is_unit_file(leaf) or is_staging_file(leaf)):
                    own.append(inner.path)
                else:
                    foreign.append(relative)
        elif name == STAGED and item.type == pafs.FileType.Directory:
            for inner in fs.get_file_info(pafs.FileSelector(item.path, recursive=True)):
                if inner.type == pafs.FileType.Directory:
                    continue
                relative = inner.path[len(base) + 1:]
                if os.path.dirname(relative) == STAGED and is_staged_file(os.path.basename(inner.path)):
                    own.append(inner.path)
                else:
                    foreign.append(relative)
        elif item.is_file and (name in OWN_FILES or _OWN_LEFTOVER.match(name)):
            own.append(item.path)
        else:
            foreign.append(name + ("/" if item.type == pafs.FileType.Directory else ""))
    return Contents(own, sorted(foreign))


def _listed(names: list[str], show: int = 5) -> str:
    more = f" and {len(names) - show} more" if len(names) > show else ""
    return ", ".join(names[:show]) + more


def refuse_foreign(loc: Location, found: Contents) -> None:
    if found.foreign:
        raise InputError(
            f"{loc.uri} holds files magistrate did not write ({_listed(found.foreign)}); "
            "magistrate never deletes or mixes with them: give a new or empty output directory")


def refuse_input_inside(loc: Location, src: Location, files: list[str]) -> None:
    """An output that holds the input (or lies inside the input's directory) would delete
    it on --overwrite, or read verdicts back as pairs on --resume."""
    if loc.is_s3 != src.is_s3:
        return
    base = loc.path.rstrip("/") + "/"
    inside = [f for f in files if f.startswith(base)]
    if inside:
        raise InputError(f"the output {loc.uri} holds the input ({_listed(inside)}): "
                         "give an output directory outside the input")
    if src.filesystem.get_file_info(src.path).type == pafs.FileType.Directory:
        if base.startswith(src.path.rstrip("/") + "/"):
            raise InputError(f"the output {loc.uri} is inside the input directory {src.uri}: "
                             "its verdict files would be read as input; give an output outside it")


def clear(loc: Location, found: Contents, keep: set[str] = frozenset()) -> int:
    """--overwrite: delete what magistrate wrote, and nothing else (the lease and its lock
    stay: the run that clears holds it; so do the staged pieces named in `keep`, which this
    run cut and reads)."""
    doomed = [p for p in found.own if os.path.basename(p) not in (LEASE, _LEASE_LOCK)
              and not (_is_staged(p) and os.path.basename(p) in keep)]
    for path in doomed:
        delete(loc, path)
    for folder in (verdicts_dir(loc), staged_dir(loc)):
        if not loc.is_s3 and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
    return len(doomed)


def _is_staged(path: str) -> bool:
    return os.path.basename(os.path.dirname(path)) == STAGED


def uncommit(loc: Location) -> None:
    """A run that changes an output first takes back its promise of being whole."""
    delete(loc, join(loc, SUCCESS))


@dataclass(frozen=True)
class Reconciliation:
    rows_planned: int
    rows_written: int
    written_off: int
    missing_units: list[str]  # planned units with no whole file
    stray_units: list[str]  # unit files that belong to no planned unit

    @property
    def complete(self) -> bool:
        return (not self.missing_units and not self.stray_units and not self.written_off
                and self.rows_written == self.rows_planned)

    def as_dict(self) -> dict:
        return {"complete": self.complete, "rows_planned": self.rows_planned,
                "rows_written": self.rows_written, "written_off_rows": self.written_off,
                "missing_units": self.missing_units[:20], "missing_unit_count": len(self.missing_units),
                "stray_units": self.stray_units[:20]}


def reconcile(units: list[Unit], files: dict[str, UnitFile]) -> Reconciliation:
    """The plan against what the unit files' footers say. A Parquet unit's row count is
    known from the input's own footers, so it is checked against that too; a JSONL or CSV
    unit's count is known only once read, and its file records it."""
    planned_ids = {u.unit_id for u in units}
    missing, planned = [], 0
    for unit in units:
        found = files.get(unit.unit_id)
        expected = unit.max_rows if unit.max_rows >= 0 else unit.rows
        if found is None or found.rows != found.planned or (unit.rows_exact and found.planned != expected):
            missing.append(unit.unit_id)
            planned += expected if unit.rows_exact else max(found.planned if found else 0, 0)
        else:
            planned += found.planned
    kept = [f for unit_id, f in files.items() if unit_id in planned_ids]
    return Reconciliation(
        rows_planned=planned,
        rows_written=sum(f.rows for f in kept),
        written_off=sum(f.written_off for f in kept),
        missing_units=missing,
        stray_units=sorted(set(files) - planned_ids),
    )


def commit(loc: Location, summary: dict) -> bool:
    """summary.json whole, then _SUCCESS when the output is complete; True if committed."""
    write_whole(loc, join(loc, SUMMARY), json.dumps(summary, indent=2, sort_keys=True).encode())
    if summary.get("complete"):
        write_whole(loc, join(loc, SUCCESS), b"")
        return True
    return False


# What a resumed run must share with the run it continues: otherwise verdicts would mix.
RESUME_KEYS = ("input", "judge", "model", "mode", "order", "seed", "unit_rows", "limit", "dry_run",
               "format", "columns", "max_new_tokens", "max_field_chars", "min_label_mass", "calibration_digest")
# What a _run.json written before a key existed meant by it.
_BEFORE_KEY = {"max_field_chars": 1_000_000, "min_label_mass": 0.0, "calibration_digest": None, "units_version": 1}
# How units are cut (sharding.py); 2: row ranges, any layout. A resume across versions would
# meet units it cannot match.
UNITS_VERSION = 2


def write_run_file(settings, loc: Location, model: str, identities: dict[str, str],
                   runs: list[str] | None = None) -> None:
    """The settings a resume must share, each input file's content identity, and the runs
    that held this output under them (a unit file of any other run is not counted)."""
    record = ({k: getattr(settings, k) for k in RESUME_KEYS}
              | {"model": model, "input_files": identities, "units_version": UNITS_VERSION})
    if runs is not None:
        record["runs"] = runs
    write_whole(loc, join(loc, RUN_FILE), json.dumps(record, indent=2, sort_keys=True).encode())


def runs_of(loc: Location) -> list[str] | None:
    """The runs that held this output under its _run.json (None: not recorded)."""
    found = read_bytes(loc, join(loc, RUN_FILE))
    return None if found is None else json.loads(found[0]).get("runs")


def fenced(files: dict[str, UnitFile], run_id: str, adopted: dict[str, str | None]) -> dict[str, UnitFile]:
    """The unit files a run may count: its own, and those it adopted when it opened the
    output. A file published since by a run that lost the lease (its check and its write
    straddling the take-over) is neither: its unit counts as missing, never as done."""
    return {u: f for u, f in files.items() if f.run_id == run_id or (u in adopted and adopted[u] == f.run_id)}




def check_resumable(settings, loc: Location, model: str, identities: dict[str, str]) -> None:
    """Refuse to resume an output written with other settings or from another input."""
    found = read_bytes(loc, join(loc, RUN_FILE))
    if found is None:
        raise InputError(f"{settings.output} has no {RUN_FILE}: it was not written by magistrate judge")
    before = json.loads(found[0])
    if before.get("units_version", _BEFORE_KEY["units_version"]) != UNITS_VERSION:
        raise InputError(f"cannot resume {settings.output}: an earlier magistrate cut its input into units "
                         "another way; start again with --overwrite")
    now = {k: getattr(settings, k) for k in RESUME_KEYS} | {"model": model}
    files_before = before.get("input_files", {})
    before = {k: before.get(k, _BEFORE_KEY.get(k)) for k in RESUME_KEYS}
    changed = [f"{k} ({before[k]!r} -> {now[k]!r})" for k in RESUME_KEYS if before[k] != now[k]]
    if changed:
        raise InputError(f"cannot resume {settings.output} with other settings: {', '.join(changed)}; "
                         "use the original settings, or --overwrite")
    if changed := input_changes(files_before, identities):
        raise InputError(f"cannot resume {settings.output}: the input changed since the run began "
                         f"({_listed(changed, 3)}), so finished units no longer match it and rows would be "
                         "judged twice or skipped; restore the input, or start again with --overwrite")


def input_changes(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """What changed between two records of the input's files, one phrase a file."""
    changed = [f"{path} added" for path in now if path not in before]
    changed += [f"{path} removed" for path in before if path not in now]
    for path in now.keys() & before.keys():
        if now[path] != before[path]:
            old, new = dict(p.split("=", 1) for p in before[path].split()), dict(p.split("=", 1) for p in now[path].split())
            what = [f"{k} {old.get(k)} -> {new.get(k)}" for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
            changed.append(f"{path} changed: {', '.join(what)}")
    return sorted(changed)


@dataclass(frozen=True)
class Opened:
    """An output that passed every check, and what preparing it for this run will do."""

    resuming: bool
    found: Contents | None  # what an --overwrite deletes, or None


def check_output(settings, loc: Location, model: str, identities: dict[str, str]) -> Opened:
    """Check the output against --resume/--overwrite, with the lease held. Deletes nothing:
    a run refused later (duplicate ids, Ray unreachable) must leave the output as it was."""
    found = contents(loc)
    if not found.holds_output():
        refuse_foreign(loc, found)
        return Opened(False, None)
    if settings.resume:
        check_resumable(settings, loc, model, identities)
        return Opened(True, None)
    if not settings.overwrite:
        raise InputError(
            f"{settings.output} already holds output: pass --resume to judge only what is "
            "missing, or --overwrite to start again")
    refuse_foreign(loc, found)
    return Opened(False, found)


def prepare_output(settings, loc: Location, opened: Opened, progress=print,
                   keep: set[str] = frozenset()) -> dict[str, UnitFile]:
    """Once nothing can refuse the run any more: take back the commit and clear what an
    --overwrite replaces (but the staged pieces in `keep`); returns the unit files already there."""
    if opened.resuming:
        uncommit(loc)
        clean_staging(loc)
        return unit_files(loc)
    if opened.found is not None:
        progress(f"magistrate: --overwrite: deleting the {clear(loc, opened.found, keep)} file(s) an earlier "
                 f"run wrote in {settings.output}")
    return {}
