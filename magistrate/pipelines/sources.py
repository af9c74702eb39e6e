"""Where pairs come from and verdicts go: local paths, globs, directories and s3:// URIs,
in Parquet, JSONL or CSV; plus column mapping and format presets."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
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


def list_input_files(loc: Location) -> list[str]:
    """The data files an input names: a file, a directory (recursively) or a glob."""
    fs = loc.filesystem
    if any(ch in loc.path for ch in "*?["):
        base = loc.path[: min(loc.path.find(c) for c in "*?[" if c in loc.path)]
        base = base.rsplit("/", 1)[0] or "/"
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        files = [i.path for i in infos if i.is_file and fnmatch.fnmatch(i.path, loc.path)]
    else:
        info = fs.get_file_info(loc.path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"{loc.uri}: no such file or directory")
        if info.is_file:
            files = [loc.path]
        else:
            infos = fs.get_file_info(pafs.FileSelector(loc.path, recursive=True))
            files = [i.path for i in infos if i.is_file]
    files = sorted(f for f in files if format_of(f) and not os.path.basename(f).startswith((".", "_")))
    if not files:
        raise InputError(f"{loc.uri}: no .parquet, .jsonl, .json or .csv files found")
    return files


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
