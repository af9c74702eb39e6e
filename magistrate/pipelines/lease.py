"""The output lease: one live run per output directory.

A run holds `OUTPUT/_lease.json` from before it looks at the output until after its
summary: created exclusively (pipelines/store.py: a hard link locally, a conditional PUT
with `If-None-Match: *` on S3), refreshed by a heartbeat thread that replaces it only
over its own last write (`If-Match` on S3, a compare-and-swap locally), deleted on the
way out.
A second run on the same output is refused, told who holds it. A lease whose holder
stopped heartbeating (a killed driver, a lost head node) is stale: `--resume` (and
`--overwrite`) take it over with a warning; a fresh run is refused and told to resume.

Staleness is seen, never computed from two hosts' clocks: the taker watches the lease
record for STALE_SECONDS on its own monotonic clock and takes it over only if it did not
change (a heartbeat rewrites it, with a counter, so a holder whose wall clock is skewed or
frozen still shows it is alive). Only a holder on this very machine (same boot and pid
namespace, not just the same hostname: two pods may share one) whose process is gone is
stale at once. A paused holder (SIGSTOP, a VM pause, a laptop asleep) is stale only after
the window, like any other.

The lease fences every write into the output: a writer checks that the lease is still
its run's (`check_held`) before it publishes a unit, writes off, or commits; unit files
record the run that wrote them, and reconciling counts only this run's files and the
ones it found when it opened the output (pipelines/commit.py `fenced`). A heartbeat that
finds the lease taken stops the run's rounds. A conditional write whose answer was lost
and which the SDK retried gets 412 for its own write: the lease is re-read and kept when
the record there is still this run's.

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
# The window a taker watches a lease unchanged (six missed heartbeats by default).
HEARTBEAT_SECONDS = float(os.environ.get("MAGISTRATE_LEASE_HEARTBEAT_SECONDS", 15.0))
STALE_SECONDS = float(os.environ.get("MAGISTRATE_LEASE_STALE_SECONDS", 6 * HEARTBEAT_SECONDS))


class LeaseLost(RuntimeError):
    """The output's lease belongs to another run now: this run writes nothing more."""


def _machine() -> str:
    """This machine and pid namespace: a pid means the same process only within both."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def _process_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def dead_here(holder: dict) -> bool:
    """The holder ran on this machine (and pid namespace) and its process is gone: a
    driver killed here is stale at once instead of after STALE_SECONDS. A record without a
    machine key (an older magistrate's) is told by its hostname."""
    here = holder.get("machine") == _machine() if "machine" in holder else holder.get("host") == socket.gethostname()
    if not here:
        return False
    started = _process_started(int(holder.get("pid", -1)))
    return started is None or abs(started - float(holder.get("pid_started", 0))) >= 1.0


def _parsed(raw: bytes) -> dict:
    try:
        holder = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _watch(loc: Location, path: str, raw: bytes, etag: str | None,
           holder: dict) -> tuple[bytes | None, str | None]:
    """The lease watched for STALE_SECONDS on this process's monotonic clock: returns it
    (bytes, ETag) if it stayed the same, (None, None) if its holder released it; refuses
    if its holder rewrote it (alive) or another run took it."""
    print(f"magistrate: the lease of {loc.uri} is held by {describe(holder)}; watching it for "
          f"{STALE_SECONDS:.0f} s before taking it over", file=sys.stderr)
    deadline = time.monotonic() + STALE_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, max(0.05, min(2.0, STALE_SECONDS / 20))))
        found = read_bytes(loc, path)
        if found is None:  # its holder finished or stopped and released it: free to take
            print(f"magistrate: {describe(holder)} released the lease of {loc.uri} while this run watched it",
                  file=sys.stderr)
            return None, None
        if found[0] != raw:
            now = _parsed(found[0])
            if now.get("run_id") == holder.get("run_id"):
                raise InputError(f"{loc.uri} is in use by a live run: {describe(now)} (its lease was rewritten "
                                 "while this run watched it). Wait for it to finish or stop it; two runs on one "
                                 "output would mix their verdicts")
            raise InputError(f"{loc.uri}: another run took over the stale lease first ({describe(now)})")
        if dead_here(holder):
            break
    return raw, etag


def describe(holder: dict) -> str:
    age = time.time() - float(holder.get("heartbeat", 0))
    return (f"run {holder.get('run_id')} on {holder.get('host')} (pid {holder.get('pid')}), "
            f"since {holder.get('since')}, last heartbeat {age:.0f} s ago by this machine's clock")


def check_held(loc: Location, run_id: str) -> None:
    """Raises LeaseLost unless the output's lease is still this run's: every write into
    the output asks first."""
    found = read_bytes(loc, join(loc, LEASE))
    try:
        holder = json.loads(found[0]) if found else None
    except json.JSONDecodeError:
        holder = {}
    if not holder or holder.get("run_id") != run_id:
        raise LeaseLost(f"the lease of {loc.uri} was taken by {taker(loc, holder)}")


def taker(loc: Location, holder: dict | None) -> str:
    """Who holds the lease now, or, once released, the last run that held the output (its
    `_run.json`, pipelines/commit.py's RUN_FILE, names the runs that did)."""
    if holder:
        return describe(holder)
    found = read_bytes(loc, join(loc, "_run.json"))
    runs = (_parsed(found[0]).get("runs") or []) if found else []
    return f"run {runs[-1]}, which has released it since" if runs else "another run, which has released it since"


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
        record = {"run_id": run_id, "host": socket.gethostname(), "machine": _machine(), "pid": os.getpid(),
                  "pid_started": _process_started(os.getpid()) or 0.0,
                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "heartbeat": time.time(),
                  "beats": 0}
        data = json.dumps(record).encode()
        path = join(loc, LEASE)
        try:
            etag = create_exclusive(loc, path, data)
        except AlreadyExists:
            etag = cls._take_over(loc, path, data, take_over_stale, run_id)
        lease = cls(loc, record, etag)
        if loc.is_s3:  # locally the exclusive step is the kernel's link(2)
            lease._refuse_a_store_without_conditions(data)
        holder = lease.holder()
        if not holder or holder.get("run_id") != run_id:  # a store that ignored the condition
            raise InputError(f"{loc.uri} is held by another run: {describe(holder or {})}")
        return lease

    @staticmethod
    def _take_over(loc: Location, path: str, data: bytes, take_over_stale: bool, run_id: str) -> str | None:
        found = read_bytes(loc, path)
        if found is None:  # released meanwhile: try once more
            try:
                return create_exclusive(loc, path, data)
            except AlreadyExists:
                found = read_bytes(loc, path) or (b"{}", None)
        raw, etag = found
        holder = _parsed(raw)
        if holder.get("run_id") == run_id:  # our own create, whose answer was lost and retried
            return etag
        if not dead_here(holder):
            if not take_over_stale:
                raise InputError(
                    f"{loc.uri} is in use by a live run, as far as its lease tells: {describe(holder)}. Wait "
                    "for it or stop it (two runs on one output would mix their verdicts); if it stopped "
                    f"heartbeating, pass --resume to take it over once its lease has stayed unchanged for "
                    f"{STALE_SECONDS:.0f} s")
            raw, etag = _watch(loc, path, raw, etag, holder)
            if raw is None:
                try:
                    return create_exclusive(loc, path, data)
                except AlreadyExists:
                    raise InputError(f"{loc.uri}: another run took the released lease first") from None
        elif not take_over_stale:
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
                self.beat()
            except LeaseLost as exc:
                self.lost = str(exc).split(" was taken by ", 1)[-1]
                print(f"magistrate: error: {exc}; this run stops and will not commit the output",
                      file=sys.stderr)
                return
            except Exception as exc:  # noqa: BLE001 - a store hiccup: try at the next beat
                print(f"magistrate: warning: lease heartbeat failed: {exc}", file=sys.stderr)

    def beat(self) -> None:
        """One heartbeat: the record rewritten over this run's last write. A 412 is read
        again: when the record there is still this run's (a retried PUT whose first answer
        was lost already wrote it), the lease is kept under the ETag found."""
        holder = self.holder()
        if not holder or holder.get("run_id") != self.record["run_id"]:
            raise LeaseLost(f"the lease of {self.loc.uri} was taken by {taker(self.loc, holder)}")
        self.record["heartbeat"] = time.time()
        self.record["beats"] = int(self.record.get("beats", 0)) + 1
        data = json.dumps(self.record).encode()
        try:
            self.etag = write_whole(self.loc, self.path, data, if_match=self.etag)
        except AlreadyExists:
            found = read_bytes(self.loc, self.path)
            holder = _parsed(found[0]) if found else {}
            if holder.get("run_id") != self.record["run_id"]:
                raise LeaseLost(f"the lease of {self.loc.uri} was taken by {taker(self.loc, holder)}") from None
            self.etag = write_whole(self.loc, self.path, data, if_match=found[1])

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        holder = self.holder()
        if holder and holder.get("run_id") == self.record["run_id"]:
            delete(self.loc, self.path)
            if not self.loc.is_s3:  # the heartbeat's lock file: nobody else uses a live lease's
                delete(self.loc, lock_name(self.path))
