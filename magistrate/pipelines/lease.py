"""The output lease: one live run per output directory.

A run holds `OUTPUT/_lease.json` from before it looks at the output until after its
summary: created exclusively (pipelines/store.py: a hard link locally, a conditional PUT
with `If-None-Match: *` on S3), refreshed by a heartbeat thread that replaces it only
over its own last write (`If-Match` on S3, a compare-and-swap locally), deleted on the
way out.
A second run on the same output is refused, told who holds it. A lease whose holder
stopped heartbeating (a killed driver, a lost head node) is stale: `--resume` (and
`--overwrite`) take it over with a warning; a fresh run is refused and told to resume.

On a store that ignores `If-None-Match` (some S3-compatible servers) an exclusive create
is an ordinary PUT: any later run, however much later, would overwrite a live run's lease
and both would write the output. So every acquisition on S3 tests the store: it asks to
create the lease it now holds once more, and to replace it under an ETag nobody has; a
store that accepts either is named and the run refused before it touches the output
(docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

import psutil

from magistrate.pipelines.sources import InputError, Location
from magistrate.pipelines.store import AlreadyExists, create_exclusive, delete, join, lock_name, read_bytes
from magistrate.pipelines.store import write_whole

LEASE = "_lease.json"
HEARTBEAT_SECONDS = 15.0
STALE_SECONDS = 90.0  # six missed heartbeats


def _process_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_live(holder: dict, now: float | None = None) -> bool:
    """A holder is live while it heartbeats; on this host, also only while its process
    (the same pid, started at the same time) exists, so a driver killed here is stale at
    once instead of after STALE_SECONDS."""
    now = time.time() if now is None else now
    if now - float(holder.get("heartbeat", 0)) > STALE_SECONDS:
        return False
    if holder.get("host") == socket.gethostname():
        started = _process_started(int(holder.get("pid", -1)))
        return started is not None and abs(started - float(holder.get("pid_started", 0))) < 1.0
    return True


def describe(holder: dict) -> str:
    age = time.time() - float(holder.get("heartbeat", 0))
    return (f"run {holder.get('run_id')} on {holder.get('host')} (pid {holder.get('pid')}), "
            f"since {holder.get('since')}, last heartbeat {age:.0f} s ago")


class Lease:
    """A held lease; use as a context manager to heartbeat and release it."""

    def __init__(self, loc: Location, record: dict, etag: str | None):
        self.loc, self.record, self.etag = loc, record, etag
        self.path = join(loc, LEASE)
        self.lost: str | None = None  # who took it, if someone did
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(cls, loc: Location, run_id: str, take_over_stale: bool) -> "Lease":
        record = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                  "pid_started": _process_started(os.getpid()) or 0.0,
                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "heartbeat": time.time()}
        data = json.dumps(record).encode()
        path = join(loc, LEASE)
        try:
            etag = create_exclusive(loc, path, data)
        except AlreadyExists:
            etag = cls._take_over(loc, path, data, take_over_stale)
        lease = cls(loc, record, etag)
        if loc.is_s3:  # locally the exclusive step is the kernel's link(2)
            lease._refuse_a_store_without_conditions(data)
        holder = lease.holder()
        if not holder or holder.get("run_id") != run_id:  # a store that ignored the condition
            raise InputError(f"{loc.uri} is held by another run: {describe(holder or {})}")
        return lease

    @staticmethod
    def _take_over(loc: Location, path: str, data: bytes, take_over_stale: bool) -> str | None:
        found = read_bytes(loc, path)
        if found is None:  # released meanwhile: try once more
            try:
                return create_exclusive(loc, path, data)
            except AlreadyExists:
                found = read_bytes(loc, path) or (b"{}", None)
        raw, etag = found
        try:
            holder = json.loads(raw)
        except json.JSONDecodeError:
            holder = {}
        if is_live(holder):
            raise InputError(f"{loc.uri} is in use by a live run: {describe(holder)}. Wait for it "
                             "to finish or stop it; two runs on one output would mix their verdicts")
        if not take_over_stale:
            raise InputError(f"{loc.uri} is leased by a run that stopped heartbeating ({describe(holder)}): "
                             "pass --resume to take it over and finish that run's work")
        print(f"magistrate: warning: taking over the lease of {loc.uri} from a run that stopped "
              f"heartbeating: {describe(holder)}", file=sys.stderr)
        # Replaced only if nobody replaced it since it was read (store.write_whole: a
        # conditional PUT on S3, a compare-and-swap locally), so of two takers one wins.
        try:
            return write_whole(loc, path, data, if_match=etag)
        except AlreadyExists:
            raise InputError(f"{loc.uri}: another run took over the stale lease first") from None

    def _refuse_a_store_without_conditions(self, data: bytes) -> None:
        """Refused, not warned: on such a store the lease keeps no run out, and two runs
        mixing their verdicts (or one deleting the other's staging files) cannot be undone,
        while a refused run loses nothing. Both tests rewrite the lease with the bytes it
        holds, so on a store that ignores them nothing changes (nor its ETag)."""
        store = getattr(self.loc.s3, "endpoint_url", None) or "AWS S3"
        ignored = None
        try:
            create_exclusive(self.loc, self.path, data)
            ignored = "If-None-Match: *"
        except AlreadyExists:
            pass
        if ignored is None:
            try:
                write_whole(self.loc, self.path, data, if_match='"00000000000000000000000000000000"')
                ignored = "If-Match"
            except AlreadyExists:
                pass
        if ignored:
            self.release()
            raise InputError(
                f"the S3 store at {store} ignores `{ignored}` (it accepted a conditional write to "
                f"{self.loc.uri}/{LEASE} that must fail), so it cannot keep a second run off this "
                "output; magistrate will not write there: use a store that honours conditional "
                "writes (AWS S3 does) or a local output")

    def holder(self) -> dict | None:
        found = read_bytes(self.loc, self.path)
        if found is None:
            return None
        try:
            return json.loads(found[0])
        except json.JSONDecodeError:
            return {}

    def __enter__(self) -> "Lease":
        self._thread = threading.Thread(target=self._beat, name="magistrate-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                holder = self.holder()
                if not holder or holder.get("run_id") != self.record["run_id"]:
                    self.lost = describe(holder or {})
                    print(f"magistrate: error: the lease of {self.loc.uri} was taken by {self.lost}; "
                          "this run will not commit the output", file=sys.stderr)
                    return
                self.record["heartbeat"] = time.time()
                self.etag = write_whole(self.loc, self.path, json.dumps(self.record).encode(),
                                        if_match=self.etag)
            except AlreadyExists:
                self.lost = "another run (the lease changed under this one)"
                return
            except Exception as exc:  # noqa: BLE001 - a store hiccup: try at the next beat
                print(f"magistrate: warning: lease heartbeat failed: {exc}", file=sys.stderr)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        holder = self.holder()
        if holder and holder.get("run_id") == self.record["run_id"]:
            delete(self.loc, self.path)
            if not self.loc.is_s3:  # the heartbeat's lock file: nobody else uses a live lease's
                delete(self.loc, lock_name(self.path))
