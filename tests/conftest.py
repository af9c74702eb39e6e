"""Shared fixtures. The embedded judge is prepared once (cached across runs, like `make
setup` does) and at most one in-process vLLM engine is started per test session."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from magistrate import faults

REPO = Path(__file__).resolve().parent.parent
# No usage reports from Ray or vLLM: tests talk to loopback only (every process they start
# inherits this environment).
os.environ.update(RAY_USAGE_STATS_ENABLED="0", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
# Ray turns 127.0.0.1 into the machine's interface address (services.resolve_ip_for_localhost)
# unless multi-node mode is off, as it is by default on macOS: off here, so every local Ray,
# ray start head and ray.cluster_utils node a test starts listens and talks on loopback.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# A run that does not say which Ray starts its own: without RAY_ADDRESS, ray.init() joins
# any `ray start` on this machine (a benchmark's, another suite's). The tests that join
# the session's head (`shared_ray`) name its address.
os.environ.setdefault("RAY_ADDRESS", "local")
# Every engine the suite starts (in this process, a CLI run's, a Ray worker's: all inherit
# it) gets a KV cache of 1 GiB (23k tokens of the 135M judge). vLLM's CPU build otherwise
# takes --gpu-memory-utilization of the machine's RAM and touches all of it (0.2: 4.7 GiB
# resident per engine here); with 2 GiB, the two workers' engines side by side still
# brought Ray's memory monitor to kill workers. A value set by the caller stays.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
EXAMPLES = REPO / "examples" / "data"
MAGISTRATE = [sys.executable, "-m", "magistrate.cli"]
BIN = Path(sys.executable).parent

# The fast tier (`make test-fast`) deselects the tests marked `engine` and `ray` and sets
# MAGISTRATE_FORBID=ray,engine, so a test that starts either without its marker fails:
# in this process (ray.init, a Ray node, `ray start`, an engine) and in any process a test
# starts (faults.starting at connect_ray and the engine's start). A refusal that a CLI run
# or an except clause swallows is noted in MAGISTRATE_REFUSED_FILE and fails the test here.
FORBID = set(filter(None, os.environ.get("MAGISTRATE_FORBID", "").split(",")))


def pytest_configure(config):
    _count_starts(config)
    _ray_tmpdir()
    _ray_token()
    if not FORBID:
        return
    import tempfile

    os.environ["MAGISTRATE_REFUSED_FILE"] = str(Path(tempfile.mkdtemp(prefix="magistrate-refused-")) / "starts")
    if "ray" in FORBID:
        import ray
        import ray.cluster_utils

        def refused(*args, **kwargs):
            faults.starting("ray")

        # Ray's auto-init (ray.get, Ray Data, Serve) goes through ray.init too.
        ray.init = refused
        ray.cluster_utils.Cluster.__init__ = refused


def pytest_collection_modifyitems(config, items):
    """The session fixtures that start an engine or join the session's Ray head carry
    their markers to every test that uses them (runs before `-m` deselects). `engine`
    stands for Ray too: `-m ray` selects the tests that start Ray and no engine."""
    implied = {"engine": "engine", "shared_ray": "ray"}
    for item in items:
        marks = {implied[name] for name in getattr(item, "fixturenames", ()) if name in implied}
        marks -= {m.name for m in item.iter_markers()}
        if "engine" in marks or item.get_closest_marker("engine"):
            marks.discard("ray")
        for mark in sorted(marks):
            item.add_marker(mark)
    # Files with engine tests first, then those with Ray, then the rest (each file's own
    # order kept): `make test`'s workers take whole files as they free up, and a long
    # engine file taken last would run alone at the end while the other worker idles.
    weight: dict[Path, int] = {}
    for item in items:
        kind = 0 if item.get_closest_marker("engine") else 1 if item.get_closest_marker("ray") else 2
        weight[item.path] = min(kind, weight.get(item.path, 2))
    items.sort(key=lambda item: weight[item.path])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if not FORBID:
        return (yield)
    record = Path(os.environ["MAGISTRATE_REFUSED_FILE"])
    before = record.stat().st_size if record.exists() else 0
    try:
        return (yield)
    finally:
        refused = record.read_bytes()[before:].decode(errors="replace") if record.exists() else ""
        if refused:
            kinds = sorted({line.split()[0] for line in refused.splitlines()})
            hint = "; `engine` instead if it starts an engine too: Ray is refused first" if kinds == ["ray"] else ""
            pytest.fail(f"{item.nodeid} started {' and '.join(kinds)} without its marker "
                        f"({', '.join(f'@pytest.mark.{k}' for k in kinds)}{hint}); refused in:\n{refused}",
                        pytrace=False)


# The start-up report: every Ray and engine this run starts, in any process, is a line in
# MAGISTRATE_STARTS_FILE (faults.starting: connect_ray, the engine's start, ray_head; a
# Ray node in this process through _CountRayNodes). Printed at the end of the run.
STARTS: dict = {"file": None, "offset": 0, "tests": {}, "folder": None, "notes": []}


def _count_starts(config) -> None:
    import tempfile

    if not os.environ.get("MAGISTRATE_STARTS_FILE"):
        STARTS["folder"] = tempfile.mkdtemp(prefix="magistrate-starts-")
        os.environ["MAGISTRATE_STARTS_FILE"] = str(Path(STARTS["folder"]) / "starts")
    STARTS["file"] = Path(os.environ["MAGISTRATE_STARTS_FILE"])
    STARTS["offset"] = STARTS["file"].stat().st_size if STARTS["file"].exists() else 0
    if "ray" not in FORBID:
        if "ray._private.node" in sys.modules:
            _count_ray_nodes(sys.modules["ray._private.node"])
        else:
            sys.meta_path.insert(0, _CountRayNodes())


def _count_ray_nodes(module) -> None:
    """A head node started in this process (ray.init of a new Ray, a ray.cluster_utils
    Cluster) is a Ray start; a node that connects to a running Ray is not."""
    init = module.Node.__init__

    def counted(self, ray_params, head=False, *args, **kwargs):
        if head and not kwargs.get("connect_only", args[2] if len(args) > 2 else False):
            faults.starting("ray", "in-process")
        return init(self, ray_params, head, *args, **kwargs)

    module.Node.__init__ = counted


class _CountRayNodes:
    """Wraps ray._private.node when it is first imported, so a run that never imports
    Ray pays nothing for the count."""

    def find_spec(self, name, path=None, target=None):
        if name != "ray._private.node":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _count_ray_nodes(module)

        spec.loader.exec_module = exec_module
        return spec


def _starts(text: str) -> list[tuple[str, int, str]]:
    lines = []
    for line in text.splitlines():
        kind, _, rest = line.strip().partition(" ")
        pid, _, how = rest.partition(" ")
        if pid.isdigit():  # a line cut short (a process killed mid-write) is left out
            lines.append((kind, int(pid), how.strip() or "local"))
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    record = STARTS["file"]
    before = record.stat().st_size if record and record.exists() else 0
    try:
        return (yield)
    finally:
        if record and record.exists() and record.stat().st_size > before:
            STARTS["tests"][item.nodeid] = record.read_bytes()[before:].decode(errors="replace")


def _summary(lines: list[tuple[str, int, str]]) -> str:
    me = os.getpid()
    engines = [pid for kind, pid, _ in lines if kind == "engine"]
    # In this process a Ray start is the node counted by _CountRayNodes; connect_ray's
    # own line here would count it twice (or count a join).
    rays = [how for kind, pid, how in lines if kind == "ray" and (pid != me or how in ("head", "in-process"))]
    started = [how for how in rays if how != "joins"]
    local = sum(how in ("local", "auto") for how in started)
    parts = [_n(started.count("head"), "head"), f"{local} local", f"{started.count('in-process')} in-process"]
    text = (f"{_n(len(engines), 'engine')} ({engines.count(me)} in-process), {_n(len(started), 'Ray')} "
            f"({', '.join(parts)})")
    joins = rays.count("joins")
    return text + (f"; {_n(joins, 'run')} joined a running Ray" if joins else "")


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    record = STARTS["file"]
    if record is None:
        return
    text = record.read_bytes()[STARTS["offset"]:].decode(errors="replace") if record.exists() else ""
    terminalreporter.write_sep("-", "start-ups")
    if config.option.verbose > 0:
        for nodeid, lines in STARTS["tests"].items():
            terminalreporter.write_line(f"{nodeid}: {_summary(_starts(lines))}")
    terminalreporter.write_line(f"start-ups: {_summary(_starts(text))}")
    for note in STARTS["notes"]:
        terminalreporter.write_line(note)


# Every Ray this run starts (a CLI run's own local Ray, ray.init or a Cluster in this
# process, a `ray start` head) writes its session folder (logs, sockets, spilled objects:
# ~40 a suite) under RAY_TMPDIR/ray: a folder of this run's own, removed at its end, not
# /tmp/ray. A RAY_TMPDIR the caller set is kept, and left alone.
RAY_TMP: dict = {"folder": None}


def _ray_tmpdir() -> None:
    import tempfile

    # Each of `make test`'s workers has its own: Ray records the last cluster started in
    # RAY_TMPDIR/ray/ray_current_cluster, and a run on one worker that joined "the" cluster
    # found the other worker's head there (its job then failed with OwnerDiedError).
    if "RAY_TMPDIR" not in os.environ or os.environ.get("PYTEST_XDIST_WORKER"):
        RAY_TMP["folder"] = tempfile.mkdtemp(prefix="mgray", dir="/tmp")  # short: Ray's socket paths
        os.environ["RAY_TMPDIR"] = RAY_TMP["folder"]


def _ray_token() -> None:
    """Every Ray a test starts (a `ray start` head, a CLI run's local one) turns on token
    auth and writes ~/.ray/auth_token if there is none, and its clients read that file.
    Two started at once on a fresh machine (the suite runs on two workers) would each
    write their own, and one's clients would hold the other's token: one is written here,
    before any start, as the first Ray would have."""
    if FORBID:
        return
    from ray._private.authentication.authentication_token_setup import (
        _get_default_token_path,
        generate_and_save_token,
    )

    if not _get_default_token_path().exists():
        generate_and_save_token()


def pytest_unconfigure(config):
    if RAY_TMP["folder"]:
        import shutil

        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():  # a Ray a test left in this process stops first
            ray.shutdown()
        shutil.rmtree(RAY_TMP["folder"], ignore_errors=True)
    if STARTS["folder"]:
        import shutil

        shutil.rmtree(STARTS["folder"], ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_model() -> str:
    from magistrate.model_files import prepare_embedded

    return str(prepare_embedded())


@pytest.fixture(scope="session")
def tiny_model(embedded_model) -> str:
    """A random-weight judge of the embedded one's shape (tests/tiny_model.py): for tests
    of mechanics, where what the judge says does not matter."""
    from tests.tiny_model import tiny_model as build

    return str(build(Path(embedded_model)))


@pytest.fixture(scope="session")
def engine(embedded_model):
    """The real vLLM CPU engine on the embedded judge, started once per session."""
    from magistrate.actors.engine import EngineSettings, VLLMEngine

    # Its KV cache: VLLM_CPU_KVCACHE_SPACE above (the share is then not used on CPU).
    engine = VLLMEngine(
        EngineSettings(model=embedded_model, max_model_len=2048, gpu_memory_utilization=0.2)
    )
    yield engine
    engine.shutdown()


def run_cli(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """`magistrate ARGS` in a fresh process, as a user runs it."""
    return subprocess.run(
        [*MAGISTRATE, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=REPO,
    )


def invoke_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`magistrate ARGS` in this process (click's runner), answered as run_cli answers: for
    the commands that start no Ray, without a fresh interpreter's ~2 s of imports. What a
    process would print on its stderr lands in `stderr` here too: click's and sys.stderr's
    lines, warnings, log records no handler took, and the traceback of an uncaught error
    (exit 1). Not for what reads the environment at import time (HF_HUB_OFFLINE) or
    writes to file descriptor 2 itself: run_cli for those. A start of Ray or an engine is
    refused here in every tier (MAGISTRATE_FORBID), never made in pytest's own process."""
    import logging
    import traceback
    import warnings

    from click.testing import CliRunner

    from magistrate.cli import main

    class ToStderr(logging.Handler):  # logging.lastResort, writing to the runner's stderr
        def emit(self, record):
            sys.stderr.write(self.format(record) + "\n")

    handler = ToStderr(logging.WARNING)
    root = logging.getLogger()

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    runner = CliRunner()
    with contextlib.chdir(REPO), warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        root.addHandler(handler)
        try:
            result = runner.invoke(main, list(args), env={"MAGISTRATE_FORBID": "ray,engine", **(env or {})},
                                   catch_exceptions=True, prog_name="magistrate")
        finally:
            root.removeHandler(handler)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(result.exception)[1:])
    return subprocess.CompletedProcess(["magistrate", *args], result.exit_code, result.stdout, stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(sid: int) -> list[psutil.Process]:
    """Every live process of session `sid` (a process started with start_new_session=True
    leads a session whose id is its pid, and what it starts stays in it)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                found.append(proc)
        except (ProcessLookupError, psutil.Error, OSError):
            pass
    return found


@contextlib.contextmanager
def ray_head(env: dict | None = None, *extra: str, log: Path | None = None, port=None):
    """`ray start --head` on loopback, as a user starts a cluster; yields (GCS address,
    dashboard URL, the environment its commands need). The raylet, and so every worker,
    inherits `env`. Ray 2.60's `ray start` turns on token auth (the token in
    ~/.ray/auth_token) unless `env` sets RAY_AUTH_MODE, so every client of it runs with
    RAY_AUTH_MODE=token.

    Ports: Ray picks the GCS port (--port=0) and the head's address is read where `ray
    start` records it, unless `port` names one (an int, or a callable that gives one per
    attempt, for a caller that writes it down before the start). A start that exits
    before it answers, or whose dashboard did not come up (a port taken between choosing
    and binding), is tried again, three times in all. Unless `extra` has a --temp-dir, the
    head's session folder goes in a folder of its own, removed when the head has stopped.

    The head runs with --block in a session of its own, and on exit exactly that session's
    processes stop: never `ray stop`, which stops every Ray on the machine (another test
    run's, a user's)."""
    import shutil
    import tempfile

    faults.starting("ray", "head")  # counted; refused under MAGISTRATE_FORBID=ray
    # Unbuffered: the dashboard's URL is read from the head's output while it runs.
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "PYTHONUNBUFFERED": "1", **(env or {})}
    env.pop("RAY_ADDRESS", None)
    if not any(arg.startswith("--num-cpus") for arg in extra):
        extra = ("--num-cpus=2", *extra)
    given_temp = next((arg.split("=", 1)[1] for arg in extra if arg.startswith("--temp-dir=")), None)
    log_dir = None if log else tempfile.mkdtemp(prefix="magistrate-ray-head-")
    log = log or Path(log_dir) / "ray-head.log"
    failures = []
    for attempt in range(3):
        temp = given_temp or tempfile.mkdtemp(prefix="mgh", dir="/tmp")  # short: Ray's socket paths
        chosen = port() if callable(port) else (port or 0)
        dashboard = free_port()
        offset = log.stat().st_size if attempt else 0
        with open(log, "a" if attempt else "w") as log_file:
            head = subprocess.Popen(
                [str(BIN / "ray"), "start", "--head", "--block", f"--port={chosen}", "--node-ip-address=127.0.0.1",
                 "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats",
                 # Ray's fixed 52365 is held by the agent of any other head on the machine
                 # (the session's): this agent's HTTP server then fails, Ray keeps it alive
                 # without one, and every `ray job submit` is "No available agent" forever.
                 *(() if any(a.startswith("--dashboard-agent-listen-port") for a in extra)
                   else ("--dashboard-agent-listen-port=0",)),
                 *(() if given_temp else (f"--temp-dir={temp}",)), *extra],
                env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            up = _head_answers(head, env, Path(temp), chosen, log, offset)
        except BaseException:
            _stop_head(head, None if given_temp else temp)
            raise
        if up:
            break
        failures.append(_read_from(log, offset)[-1500:])
        _stop_head(head, None if given_temp else temp)
    else:
        raise AssertionError("ray start --head failed three times:\n" + "\n---\n".join(failures))
    try:
        yield *up, env
    finally:
        _stop_head(head, None if given_temp else temp)
        if log_dir:
            shutil.rmtree(log_dir, ignore_errors=True)


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _head_answers(head: subprocess.Popen, env: dict, temp: Path, port: int, log: Path, offset: int):
    """(GCS address, dashboard URL) once the head answers; None if it exited first or came
    up without its dashboard. Its output is in `log` from `offset` on."""
    import re

    deadline = time.monotonic() + 180
    while True:
        if head.poll() is not None:
            return None
        # `ray start` records the address once the head is up and it has said where the
        # dashboard is.
        recorded = temp / "ray_current_cluster"
        address = recorded.read_text().strip() if recorded.exists() else None
        if address and subprocess.run([str(BIN / "ray"), "status", f"--address={address}"], env=env,
                                      capture_output=True, timeout=60).returncode == 0:
            assert not port or address == f"127.0.0.1:{port}", (address, port)
            urls = re.findall(r"RAY_API_SERVER_ADDRESS='(http://[^']+)'", _read_from(log, offset))
            return (address, urls[-1]) if urls else None
        assert time.monotonic() < deadline, "the Ray head did not come up:\n" + _read_from(log, offset)[-3000:]
        time.sleep(1)


def _stop_head(head: subprocess.Popen, temp: str | None) -> None:
    """Stop a ray_head's processes, then remove its session folders (`temp`: the head's
    own temporary folder, if it made one)."""
    import shutil

    # Every process of the head's session (its own, workers, fake nodes) at once: no test
    # needs what a graceful stop does, and `ray start --block` took ~30 s to stop on SIGTERM.
    left = session_processes(head.pid)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=30)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(timeout=30)
    if temp:
        shutil.rmtree(temp, ignore_errors=True)


class SharedRay:
    """The session's `ray start --head` (ray_head) that CLI runs join by address, as users
    run magistrate on a cluster: a run pays no Ray start of its own. Its workers, and so
    every actor and engine of a joined run, inherit the head's environment, not the
    run's: a test whose run needs other variables in its workers starts its own Ray.
    Before each run that joins it the head must answer and be idle (no live actor or
    placement group of a finished job: a failed test's leftover would starve the next);
    if it is not within IDLE_WAIT seconds, or died, a fresh head replaces it, and the
    run's report says so."""

    IDLE_WAIT = 60

    def __init__(self, env: dict):
        self.head_env, self.stack, self.starts = env, None, 0

    def start(self) -> None:
        import shutil
        import tempfile

        self.stack = contextlib.ExitStack()
        self.temp = temp = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's socket paths
        self.stack.callback(shutil.rmtree, temp, ignore_errors=True)
        self.log = Path(temp) / "head.log"
        self.address, self.dashboard, _ = self.stack.enter_context(
            ray_head(self.head_env, f"--temp-dir={temp}", log=self.log))
        self.starts += 1

    def stop(self) -> None:
        """No run is left to finish: ray_head kills the head's processes at once."""
        if self.stack:
            self.stack.close()
            self.stack = None

    def join(self) -> dict:
        """What a run needs in its environment to join the head, once the head is ready."""
        if self.stack is None:
            self.start()
        else:
            self.ready()
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token"}

    def _get(self, what: str) -> list[dict]:
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        request = urllib.request.Request(
            f"{self.dashboard}/api/v0/{what}?limit=1000&detail=true", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["data"]["result"]["result"]

    def busy(self) -> list[str]:
        """What holds resources now: live actors and placement groups (Ray Data keeps a
        few detached actors that hold nothing between jobs: those are no leftover)."""
        found = [f"actor {a.get('class_name')} (job {a.get('job_id')}, pid {a.get('pid')})"
                 for a in self._get("actors") if a.get("state") == "ALIVE"
                 and not (a.get("is_detached") and not any((a.get("required_resources") or {}).values()))]
        found += [f"placement group {g.get('placement_group_id')}" for g in self._get("placement_groups")
                  if g.get("state") in ("CREATED", "PENDING", "RESCHEDULING") and not g.get("is_detached")]
        return found

    def ready(self) -> None:
        """Make sure the head answers and is idle, else replace it (said on stderr)."""
        from magistrate.actors.placement import _answers

        why = None if _answers(self.address) else "it stopped answering"
        deadline = time.monotonic() + self.IDLE_WAIT
        while why is None:
            try:
                busy = self.busy()
            except (OSError, ValueError, KeyError) as exc:
                busy = [f"its state API failed: {exc!r}"]
            if not busy:
                return
            if time.monotonic() > deadline:
                why = f"still busy after {self.IDLE_WAIT} s: {'; '.join(busy[:5])}"
            else:
                time.sleep(0.5)
        STARTS["notes"].append(f"the shared Ray head at {self.address} was replaced: {why}")
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def shared_ray(aws_env):
    """The session's Ray head, started on first use: a run joins it with
    `env=shared_ray.join()` (RAY_ADDRESS and token auth; the head checked first). The
    head's environment has the fake AWS credentials of `aws_env`, so joined runs' workers
    read the moto S3 server as their drivers do."""
    head = SharedRay(aws_env)
    try:
        yield head
    finally:
        head.stop()


# S3: a moto server in server mode on 127.0.0.1, reached through s3fs as on AWS.
BUCKET_REGION = "us-east-1"


@pytest.fixture(scope="session")
def aws_env(tmp_path_factory) -> dict:
    """Fake credentials only: no profile, config file or instance metadata can leak in."""
    home = tmp_path_factory.mktemp("aws")
    return {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": BUCKET_REGION,
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


@pytest.fixture(scope="session")
def moto_url(aws_env, tmp_path_factory):
    """A moto S3 server in its own process on a loopback port it picks itself (port 0, so
    no other process can take the port between choosing and binding); killed at the end."""
    import re

    log = tmp_path_factory.mktemp("moto") / "moto.log"
    moto_server = Path(sys.executable).parent / "moto_server"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", "0"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **aws_env, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 60
        url = None
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"moto_server did not answer on {url} within 60 s:\n{log.read_text()}")
            bound = re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
            if bound is None:  # not listening yet
                time.sleep(0.2)
                continue
            url = bound.group(1)
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"moto_server did not answer on {url} within 60 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def s3_client(moto_url: str):
    import boto3

    return boto3.client("s3", endpoint_url=moto_url, region_name=BUCKET_REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")
