"""Writing to an output store, local or S3, so that a reader only ever sees whole files.

Every file magistrate writes goes through `write_whole`: its bytes are complete in memory
before the store sees any of them. Locally they go to a staging name beside the target
and are renamed over it (rename(2) is atomic on one filesystem); on S3 they are one PUT,
or, past s3fs's size for one PUT, a multipart upload that s3fs aborts on any failure, so
no object appears until its last byte is stored. Writing into a stream that commits on
close would publish whatever had been written when an exception or SIGTERM closed it.

`create_exclusive` is the lease's primitive: an exclusive create, locally a hard link of
a staged file (fails if the name exists), on S3 a conditional PUT (`If-None-Match: *`).
A replace `if_match` an ETag is, on S3, a conditional PUT (`If-Match`); locally a
compare-and-swap under flock(2) on a lock file beside the target, with the MD5 of the
bytes as the ETag (what S3 gives for one PUT). flock, not a lock file created
exclusively: the kernel drops it when its holder dies, so a killed run cannot leave it held.

A file too big to hold in memory (`select`'s DPO file) is built in `staged_file`, off to
the side on local disk, and stored in one step by `publish_file`: locally a rename (or, not
overwriting, a hard link) of a staging file beside the target; on S3 one upload of the
finished file (s3fs's put_file: a PUT, or a multipart upload that is aborted on failure,
and S3 shows no object before its CompleteMultipartUpload).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import pyarrow.fs as pafs

from magistrate.pipelines.sources import Location

T = TypeVar("T")


class AlreadyExists(Exception):
    """An exclusive create found the name taken, or a conditional replace lost its race."""


def join(loc: Location, name: str) -> str:
    return f"{loc.path.rstrip('/')}/{name}"


def staging_name(path: str) -> str:
    """A local staging file beside `path`: hidden, and ending in .tmp, so no reader of
    the output (which skips names starting with '.') and no listing of units sees it."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.{uuid.uuid4().hex[:8]}.tmp")


def _staged(path: str, data: bytes) -> str:
    """`data` on disk under a staging name beside `path` (removed again if writing fails)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = staging_name(path)
    try:
        with open(staging, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(staging):
            os.unlink(staging)
        raise
    return staging


def local_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def lock_name(path: str) -> str:
    """The lock file of a local conditional replace of `path` (hidden, like staging files)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.lock")


@contextlib.contextmanager
def _locked(path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(lock_name(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_whole(loc: Location, path: str, data: bytes, if_match: str | None = None) -> str | None:
    """Store `data` under `path` (a path as loc's filesystem takes it), whole or not at
    all; returns the ETag (locally only of a conditional replace: hashing every unit file
    would cost the data plane for nothing). `if_match`: only if the file still has this
    ETag (AlreadyExists otherwise)."""
    if loc.is_s3:
        kwargs = {"IfMatch": if_match} if if_match else {}
        try:
            answer = loc.s3.pipe_file(path, data, **kwargs)
        except Exception as exc:
            if _precondition_failed(exc):
                raise AlreadyExists(path) from exc
            raise
        return (answer or {}).get("ETag")
    if if_match is None:
        _replace(path, data)
        return None
    with _locked(path):
        found = read_bytes(loc, path)
        if found is None or found[1] != if_match:
            raise AlreadyExists(path)
        _replace(path, data)
    return local_etag(data)


def _replace(path: str, data: bytes) -> None:
    staging = _staged(path, data)
    try:
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)


def create_exclusive(loc: Location, path: str, data: bytes) -> str | None:
    """Store `data` under `path` only if nothing is there yet (AlreadyExists otherwise)."""
    if loc.is_s3:
        try:
            answer = loc.s3.pipe_file(path, data, mode="create")
        except Exception as exc:
            if _precondition_failed(exc) or isinstance(exc, FileExistsError):
                raise AlreadyExists(path) from exc
            raise
        return (answer or {}).get("ETag")
    staging = _staged(path, data)
    try:
        os.link(staging, path)  # fails if `path` exists: the exclusive step
    except FileExistsError:
        raise AlreadyExists(path) from None
    finally:
        os.unlink(staging)
    return local_etag(data)


@contextlib.contextmanager
def staged_file(loc: Location, path: str) -> Iterator[str]:
    """A local file to build `path`'s content in, for publish_file: locally a staging name
    beside `path` (hidden, on the same filesystem, so publishing it is a rename), for S3 a
    temporary file in $TMPDIR (it needs room for the whole file). Gone on leaving, however
    the block ends; a process killed with SIGKILL leaves it (hidden, ending in .tmp)."""
    if loc.is_s3:
        fd, staging = tempfile.mkstemp(prefix=".magistrate-", suffix=".tmp")
        os.close(fd)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        staging = staging_name(path)
    try:
        yield staging
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)


def publish_file(loc: Location, staging: str, path: str, overwrite: bool = True) -> None:
    """The finished file `staging` (from staged_file) stored as `path` in one step, whole
    or not at all. `overwrite` false: AlreadyExists when `path` is there, and it stays
    (locally a hard link, on S3 a conditional upload, `If-None-Match: *`)."""
    if loc.is_s3:
        try:
            loc.s3.put_file(staging, path, mode="overwrite" if overwrite else "create")
        except Exception as exc:
            if not overwrite and (_precondition_failed(exc) or isinstance(exc, FileExistsError)):
                raise AlreadyExists(path) from exc
            raise
        return
    with open(staging, "rb") as f:
        os.fsync(f.fileno())
    if overwrite:
        os.replace(staging, path)
        return
    try:
        os.link(staging, path)  # fails if `path` exists
    except FileExistsError:
        raise AlreadyExists(path) from None
    os.unlink(staging)


def read_bytes(loc: Location, path: str) -> tuple[bytes, str | None] | None:
    """The file's bytes and its ETag, or None when there is no such file."""
    if loc.is_s3:
        try:
            etag = loc.s3.info(path).get("ETag")
            return loc.s3.cat_file(path), etag
        except FileNotFoundError:
            return None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return data, local_etag(data)


def delete(loc: Location, path: str) -> None:
    """Delete one file; a file already gone is fine."""
    try:
        loc.filesystem.delete_file(path)
    except FileNotFoundError:
        pass


def map_files(loc: Location, fn: Callable[[str], T], paths: Iterable[str]) -> Iterator[T]:
    """fn over the output's files, in order. On S3 each file is a round trip, so 16 go at
    once; on local disk one thread is faster (the per-file work holds the GIL;
    docs/performance.md)."""
    with ThreadPoolExecutor(max_workers=16 if loc.is_s3 else 1) as pool:
        yield from pool.map(fn, paths)


def exists(loc: Location, path: str) -> bool:
    return loc.filesystem.get_file_info(path).type != pafs.FileType.NotFound


def _precondition_failed(exc: BaseException) -> bool:
    """s3fs turns S3's 412 PreconditionFailed into an OSError or a botocore ClientError,
    depending on the version; look for it along the chain."""
    seen = exc
    while seen is not None:
        text = f"{type(seen).__name__} {seen}"
        if "PreconditionFailed" in text or "412" in text or "Precondition" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False
