"""Where pairs come from and verdicts go: local paths, globs, directories and s3:// URIs,
in Parquet, JSONL or CSV; plus column mapping and format presets."""

from __future__ import annotations

import fnmatch
import functools
import os
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pyarrow.fs as pafs
import s3fs
from pyarrow.fs import FSSpecHandler, PyFileSystem

from magistrate.judges.calibration import Calibration, parse_calibration

Format = Literal["auto", "rewardbench", "llmbar", "standard"]
_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}

# Preset: standard column <- source column; plus how its label reads.
PRESETS: dict[str, dict[str, str]] = {
    "rewardbench": {"prompt": "prompt", "response_a": "chosen", "response_b": "rejected"},
    "llmbar": {"prompt": "input", "response_a": "output_1", "response_b": "output_2"},
}


class InputError(ValueError):
    """A problem with the input as a whole (not one row): told to the user, no traceback."""


@dataclass(frozen=True)
class Location:
    uri: str
    filesystem: pafs.FileSystem
    path: str  # the uri as the filesystem takes it
    s3: Any = field(default=None, compare=False)  # the s3fs filesystem behind an s3:// location

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def at_versions(self, versions: dict[str, str | None]) -> "Location":
        """This location with each named S3 object read at its version (its VersionId, as
        input_identities recorded it): in a bucket that keeps versions, an input overwritten
        during a run is still read as the run planned it. Local paths, and objects without a
        version, read as they are."""
        versions = {path: v for path, v in versions.items() if v}
        if not self.is_s3 or not versions:
            return self
        s3 = s3fs.S3FileSystem(**{**self.s3.storage_options, "version_aware": True})
        return replace(self, filesystem=PyFileSystem(_AtVersions(s3, versions)))


class _AtVersions(FSSpecHandler):
    """A version-aware s3fs opening each named object as `key?versionId=...`."""

    def __init__(self, fs, versions: dict[str, str]):
        super().__init__(fs)
        self.versions = versions

    def _at(self, path: str) -> str:
        version = self.versions.get(path)
        return f"{path}?versionId={version}" if version else path

    def open_input_file(self, path):
        return super().open_input_file(self._at(path))

    def open_input_stream(self, path):
        return super().open_input_stream(self._at(path))


def s3_options(endpoint_url: str | None = None) -> dict:
    """s3fs options: the standard AWS credential chain, plus an S3-compatible endpoint
    from --s3-endpoint-url or $AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL."""
    endpoint = (
        endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    options: dict = {"config_kwargs": {"retries": {"max_attempts": 10, "mode": "adaptive"}}}
    if endpoint:
        options["endpoint_url"] = endpoint
    return options


def locate(uri: str, endpoint_url: str | None = None) -> Location:
    if uri.startswith("s3://"):
        # No listings cache: s3fs would otherwise answer every later listing from its
        # first one, and a driver would never see the units its actors publish.
        s3 = s3fs.S3FileSystem(use_listings_cache=False, **s3_options(endpoint_url))
        return Location(uri, PyFileSystem(FSSpecHandler(s3)), uri[len("s3://"):], s3)
    if "://" in uri:
        raise InputError(f"{uri}: only local paths and s3:// URIs are supported")
    path = os.path.abspath(os.path.expanduser(uri))
    return Location(uri, pafs.LocalFileSystem(), path)


def read_calibration(uri: str, endpoint_url: str | None = None) -> Calibration:
    """A file `magistrate calibrate` wrote (local or s3://), or an InputError saying why not:
    the one reader `--calibration FILE` goes through in every command."""
    loc = locate(uri, endpoint_url)
    try:
        with loc.filesystem.open_input_stream(loc.path) as stream:
            text = stream.read()
    except OSError as exc:  # FileNotFoundError, IsADirectoryError, S3's errors
        raise InputError(f"{uri}: cannot read the calibration file ({exc})") from None
    try:
        return parse_calibration(text, uri)
    except ValueError as exc:
        raise InputError(str(exc)) from None


@dataclass(frozen=True)
class InputListing:
    """The data files an input names, and how many it skipped: data files whose path
    below the input's root has a name starting with `.` or `_` (`.git/`, `_archive/`,
    `_part.jsonl`), and the `summary.json` of a magistrate output (beside its `_SUCCESS`
    or `_run.json`)."""

    files: list[str]
    skipped: int = 0

    @property
    def skipped_note(self) -> str:
        """For the plan's first line: '' when nothing was skipped."""
        if not self.skipped:
            return ""
        return (f"{self.skipped:,} hidden or underscore file{'s' if self.skipped != 1 else ''} skipped "
                "(names starting with . or _, or a magistrate output's summary.json)")


_WILDCARDS = "*?["


def list_input(loc: Location) -> InputListing:
    """The data files an input names: a file (whatever its name), a directory (recursively)
    or a glob, sorted; see InputListing for what is skipped below the root. A glob matches
    path components: `*`, `?` and `[...]` never cross `/`, a `**` component spans any
    number of folders (none included); it is listed from its longest prefix without
    wildcards, recursively only when it must be."""
    fs = loc.filesystem
    parts = loc.path.split("/")
    first = next((i for i, part in enumerate(parts) if any(ch in part for ch in _WILDCARDS)), None)
    if first is not None:
        if loc.is_s3 and first == 0:
            raise InputError(f"{loc.uri}: a wildcard in the bucket name is not supported")
        base = "/".join(parts[:first]) or "/"
        pattern = [part for part in parts[first:] if part]
        recursive = any(part == "**" for part in pattern) or len(pattern) > 1
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=True))
    else:
        info = fs.get_file_info(loc.path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"{loc.uri}: no such file or directory")
        if info.is_file:
            return _found(loc, [loc.path] if format_of(loc.path) else [], 0)
        base, pattern = loc.path, None
        infos = fs.get_file_info(pafs.FileSelector(loc.path, recursive=True))
    below = {_below(base, i.path): i.path for i in infos if i.is_file}
    files, skipped = [], 0
    for rel, path in below.items():
        if not format_of(path) or pattern is not None and not _matches(rel.split("/"), pattern, hidden=True):
            continue
        if _hidden(rel, pattern) or _run_summary(rel, below):
            skipped += 1
        else:
            files.append(path)
    return _found(loc, sorted(files), skipped)


def list_input_files(loc: Location) -> list[str]:
    """The data files an input names (list_input's files)."""
    return list_input(loc).files


def _found(loc: Location, files: list[str], skipped: int) -> InputListing:
    """The listing, or the refusal of an input with no data file."""
    listing = InputListing(files, skipped)
    if not files:
        why = f" ({listing.skipped_note})" if skipped else ""
        raise InputError(f"{loc.uri}: no .parquet, .jsonl, .json or .csv files found{why}")
    return listing


def _below(base: str, path: str) -> str:
    """A listed path relative to the folder listed."""
    return path[len(base.rstrip("/")) + 1:]


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _matches(names: list[str], pattern: list[str], hidden: bool) -> bool:
    """Whether a relative path's components match a glob's; `hidden=False`: a name starting
    with `.` or `_` matches only a pattern component that starts with the same character."""

    @functools.lru_cache(maxsize=None)
    def match(i: int, j: int) -> bool:
        if j == len(pattern):
            return i == len(names)
        if pattern[j] == "**":
            if match(i, j + 1):
                return True
            return i < len(names) and (hidden or not _is_hidden(names[i])) and match(i + 1, j)
        if i == len(names) or not fnmatch.fnmatchcase(names[i], pattern[j]):
            return False
        if not hidden and _is_hidden(names[i]) and pattern[j][0] != names[i][0]:
            return False
        return match(i + 1, j + 1)

    return match(0, 0)


def _hidden(rel: str, pattern: list[str] | None) -> bool:
    """A name below the root starts with `.` or `_` (and a glob does not name it so)."""
    names = rel.split("/")
    if pattern is None:
        return any(_is_hidden(name) for name in names)
    return not _matches(names, pattern, hidden=False)


def _run_summary(rel: str, below: dict[str, str]) -> bool:
    """A magistrate output's summary.json: beside its _SUCCESS or _run.json."""
    from magistrate.pipelines.commit import RUN_FILE, SUCCESS, SUMMARY  # commit.py imports this module

    folder, _, name = rel.rpartition("/")
    prefix = f"{folder}/" if folder else ""
    return name == SUMMARY and any(f"{prefix}{sibling}" in below for sibling in (SUCCESS, RUN_FILE))


def format_of(path: str) -> str | None:
    """parquet, json or csv, from the file's suffix (None: not an input file)."""
    return _SUFFIXES.get(os.path.splitext(path)[1].lower())


def column_mapping(columns: list[str], fmt: Format, overrides: dict[str, str]) -> tuple[dict[str, str], str]:
    """Standard column <- source column, and the preset that was applied."""
    preset = fmt
    if fmt == "auto":
        if {"prompt", "response_a", "response_b"} <= set(columns):
            preset = "standard"
        elif {"chosen", "rejected"} <= set(columns):
            preset = "rewardbench"
        elif {"output_1", "output_2"} <= set(columns):
            preset = "llmbar"
        else:
            preset = "standard"
    mapping = dict(PRESETS.get(preset, {}))
    mapping.update(overrides)
    return mapping, preset


def parse_columns(spec: str | None) -> dict[str, str]:
    """`prompt=input,response_a=output_1` -> {"prompt": "input", "response_a": "output_1"}."""
    if not spec:
        return {}
    mapping = {}
    for part in spec.split(","):
        if "=" not in part:
            raise InputError(f"--columns: {part!r} is not standard=source (e.g. prompt=input)")
        target, source = (s.strip() for s in part.split("=", 1))
        allowed = {"id", "prompt", "response_a", "response_b", "label", "subset", "model_a", "model_b"}
        if target not in allowed:
            raise InputError(f"--columns: {target!r} is not one of {', '.join(sorted(allowed))}")
        mapping[target] = source
    return mapping


def resolve_mapping(columns: list[str], fmt: Format, spec: str | None, where: str) -> tuple[dict[str, str], str]:
    """Column mapping for an input with these columns, or a clear error naming what is missing."""
    mapping, preset = column_mapping(columns, fmt, parse_columns(spec))
    missing = [f"{target} (from column {source!r})" for target, source in mapping.items()
               if source not in columns]
    missing += [c for c in ("prompt", "response_a", "response_b")
                if c not in mapping and c not in columns]
    if missing:
        raise InputError(
            f"{where}: no column for {', '.join(missing)}; the input has {', '.join(columns)}. "
            "Use --format or --columns prompt=...,response_a=...,response_b=..."
        )
    return mapping, preset
