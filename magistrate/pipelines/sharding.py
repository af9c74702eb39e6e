"""The input cut into units of about `--unit-rows` pairs, whatever its layout: the
planning pass.

A file is planned first from what is cheap to know (pipelines/reading.py, `layout`): a
Parquet footer gives runs of whole row groups, read in place by the unit that holds them.
What cannot be cut from metadata is a *part*, cut by one pass over its bytes:

- a Parquet row group over 2 x unit_rows (pandas and pyarrow write one group of up to
  1,048,576 rows), streamed once into unit-sized pieces;
- a CSV file (a quoted field may hold newlines: only a parser finds its records), streamed
  once by Arrow's reader into unit-sized pieces;
- a JSONL file, scanned for where its lines start (256 MiB a part), so its units are byte
  ranges of about unit_rows lines however uneven the lines are.

Pieces are *staged*: stored whole (store.write_whole) in the output's `_staged/` folder
as Parquet files of one unit each, with a manifest per part written last. They belong to
the output: a resumed run reuses a part whose manifest is there (the part's name carries
its file's content identity, so a changed file is cut again), `--overwrite`
removes them with the rest of magistrate's files. Parts over 16 MiB are cut in parallel
Ray tasks, smaller ones in the driver, where a task would cost more than the cut.

So an input byte is read by the cut (JSONL, CSV, oversized row groups), by the
duplicate-id pass and by the unit's reader (a staged piece by the last two instead of the
input: docs/input.md); no process holds more than a piece at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace

import pyarrow as pa
import pyarrow.parquet as pq

from magistrate.pipelines.reading import FORMATS, Piece, Span, check_file
from magistrate.pipelines.sources import Location, format_of, locate
from magistrate.pipelines.store import map_files, read_bytes, write_whole
from magistrate.pipelines.units import UNIT_ROWS, Unit, unit_id_of

STAGED = "_staged"
IN_DRIVER = 16 << 20  # a part of a file this small is cut in the driver


@dataclass(frozen=True)
class Part:
    """One pass over part of one file (reading.py's `cut`), named by everything it depends on."""

    path: str
    kind: str
    part: tuple[int, ...]
    unit_rows: int
    identity: str  # the file's content identity (input_identities)
    file_bytes: int

    @property
    def part_id(self) -> str:
        key = f"{self.path}|{self.kind}|{self.part}|{self.unit_rows}|{self.identity}"
        return "part-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def staged_dir(loc: Location) -> str:
    return f"{loc.path.rstrip('/')}/{STAGED}"


def staged_path(loc: Location, name: str) -> str:
    return f"{staged_dir(loc)}/{name}"


def is_staged_file(name: str) -> bool:
    """A staged piece, a part's manifest, or a local staging file of either (store.py)."""
    if name.startswith(".") and name.endswith(".tmp"):
        name = name[1:].rsplit(".", 2)[0]
    return name.startswith("part-") and name.endswith((".parquet", ".json"))


def input_identities(src: Location, files: list[str]) -> dict[str, str]:
    """What identifies each input file's content without reading it: locally its size,
    modification time (ns) and inode; on S3 its size, ETag and, where the bucket keeps
    versions, VersionId. Units are tied to it (their ids and their staged parts' names),
    and a resume over a file whose identity changed is refused (pipelines/commit.py)."""
    if src.is_s3:
        def one(path: str) -> str:
            info = src.s3.info(path)
            version = info.get("VersionId")
            return (f"size={info.get('size')} etag={info.get('ETag', '').strip(chr(34))}"
                    + (f" version={version}" if version and version != "null" else ""))
        return dict(zip(files, map_files(src, one, files)))

    def local(path: str) -> str:
        st = os.stat(path)
        return f"size={st.st_size} mtime_ns={st.st_mtime_ns} inode={st.st_ino}"
    return {path: local(path) for path in files}


def version_in(identity: str) -> str | None:
    """The S3 VersionId an identity (input_identities) records, if any."""
    return next((word[len("version="):] for word in identity.split() if word.startswith("version=")), None)


def as_recorded(src: Location, identities: dict[str, str]) -> Location:
    """`src` reading each file at the version its identity records (S3 VersionId)."""
    return src.at_versions({path: version_in(identity) for path, identity in identities.items()})


def _manifest(part: Part) -> str:
    return f"{part.part_id}.json"


def cut(src: Location, part: Part, staging: Location | None) -> list[Span]:
    """Cut one part; its staged pieces are stored in `staging`, its manifest last."""
    fmt = FORMATS[part.kind]
    spans = []
    for k, piece in enumerate(fmt.cut(src.filesystem, part.path, part.part, part.unit_rows)):
        span = piece.span
        if fmt.staged:
            if staging is None:
                raise ValueError(f"{part.path} must be staged and no staging location was given")
            name = f"{part.part_id}-{k:05d}.parquet"
            write_whole(staging, staged_path(staging, name), _piece_bytes(piece, part.path))
            span = replace(span, staged=name)
        spans.append(span)
    if fmt.staged:
        write_whole(staging, staged_path(staging, _manifest(part)),
                    json.dumps([asdict(s) for s in spans]).encode())
    return spans


def _piece_bytes(piece: Piece, path: str) -> bytes:
    record = {"path": path, "start": piece.span.start, "problems": {str(i): p for i, p in piece.problems.items()}}
    table = piece.table.replace_schema_metadata({b"magistrate_staged": json.dumps(record).encode()})
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    return buffer.getvalue().to_pybytes()


def _cut_task(src_uri: str, endpoint: str | None, staging_uri: str | None, part: Part) -> list[Span]:
    src = locate(src_uri, endpoint).at_versions({part.path: version_in(part.identity)})
    return cut(src, part, staging_uri and locate(staging_uri, endpoint))


def _staged_already(staging: Location | None, part: Part) -> list[Span] | None:
    if staging is None or not FORMATS[part.kind].staged:
        return None
    found = read_bytes(staging, staged_path(staging, _manifest(part)))
    return None if found is None else [Span(**s) for s in json.loads(found[0])]


def shard(src: Location, files: list[str], unit_rows: int, staging: Location | None = None,
          endpoint: str | None = None, parallel: bool = False, progress=None,
          identities: dict[str, str] | None = None) -> list[Unit]:
    """The units of these files, in input order: deterministic for the same files (the
    same `identities`: input_identities) and unit_rows. `staging`: where staged pieces go
    (the output); `parallel`: cut big parts in Ray tasks (Ray connected). A file that
    cannot be read as a whole is refused here, before any judging (reading.check_file)."""
    identities = identities if identities is not None else input_identities(src, files)
    # Every read below (footers, cuts) and every unit's reader reads the version recorded.
    src = as_recorded(src, identities)
    fs = src.filesystem
    plans = []
    for info in fs.get_file_info(files):
        fmt = FORMATS[format_of(info.path)]
        check_file(fs, info.path, fmt)
        spans, parts = fmt.layout(fs, info.path, unit_rows)
        identity = identities[info.path]
        plans.append((info.path, fmt, spans, identity,
                      [Part(info.path, fmt.name, p, unit_rows, identity, info.size) for p in parts]))
    parts = [p for *_, ps in plans for p in ps]
    done = {p.part_id: found for p in parts if (found := _staged_already(staging, p)) is not None}
    todo = [p for p in parts if p.part_id not in done]
    remote = [p for p in todo if parallel and p.file_bytes > IN_DRIVER]
    if remote and progress:  # long enough to say (a small part is cut in a blink)
        progress(f"magistrate: cutting {len(todo)} part(s) of the input into units ({len(remote)} in Ray tasks)")
    refs = _start_tasks(src, remote, staging, endpoint) if remote else {}
    for part in todo:
        if part.part_id not in refs:
            done[part.part_id] = cut(src, part, staging)
    if refs:
        import ray

        done.update(zip(refs, ray.get(list(refs.values()))))
    units = []
    for path, fmt, spans, identity, file_parts in plans:
        spans = sorted(spans + [s for p in file_parts for s in done[p.part_id]], key=lambda s: s.start)
        units += [Unit(unit_id_of(path, fmt.name, s.start, s.stop, identity), path, fmt.name, s.start, s.stop,
                       s.rows, staged=s.staged, version=version_in(identity) or "")
                  for s in fmt.join(spans, unit_rows)]
    return units


def _start_tasks(src: Location, parts: list[Part], staging: Location | None, endpoint: str | None) -> dict:
    import ray

    task = ray.remote(num_cpus=1, max_retries=3)(_cut_task)
    staging_uri = staging and (staging.uri if staging.is_s3 else staging.path)
    return {p.part_id: task.remote(src.uri if src.is_s3 else src.path, endpoint, staging_uri, p) for p in parts}


def plan_units(loc: Location, files: list[str], unit_rows: int = UNIT_ROWS,
               staging: Location | None = None) -> list[Unit]:
    """The units of these files, cut in this process."""
    return shard(loc, files, unit_rows, staging)


def staged_names(units: list[Unit]) -> set[str]:
    """The staged files these units read, with their parts' manifests."""
    names = {u.staged for u in units if u.staged}
    return names | {n.rsplit("-", 1)[0] + ".json" for n in names}
