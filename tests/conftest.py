"""Shared fixtures. The embedded judge is prepared once (cached across runs, like `make
setup` does) and at most one in-process vLLM engine is started per test session."""

from __future__ import annotations

import contextlib
import os
import signal
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
            pytest.fail(f"{item.nodeid} started {' and '.join(kinds)} without its marker "
                        f"({', '.join(f'@pytest.mark.{k}' for k in kinds)}); refused in:\n{refused}",
                        pytrace=False)


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
def ray_head(env: dict | None = None, *extra: str, log: Path | None = None, port: int | None = None):
    """`ray start --head` on loopback, as a user starts a cluster; yields (GCS address,
    dashboard URL, the environment its commands need). The raylet, and so every worker,
    inherits `env`. Ray 2.60's `ray start` turns on token auth (the token in
    ~/.ray/auth_token) unless `env` sets RAY_AUTH_MODE, so every client of it runs with
    RAY_AUTH_MODE=token.

    The head runs with --block in a session of its own, and on exit exactly that session's
    processes stop: never `ray stop`, which stops every Ray on the machine (another test
    run's, a user's)."""
    if "ray" in FORBID:
        faults.starting("ray")
    port, dashboard = port or free_port(), free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token", **(env or {})}
    env.pop("RAY_ADDRESS", None)
    if not any(arg.startswith("--num-cpus") for arg in extra):
        extra = ("--num-cpus=2", *extra)
    log_file = open(log or os.devnull, "w")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats", *extra],
        env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while subprocess.run([str(BIN / "ray"), "status", f"--address={address}"], env=env,
                             capture_output=True, timeout=60).returncode != 0:
            assert head.poll() is None, "ray start exited" + (f": {log.read_text()[-3000:]}" if log else "")
            assert time.monotonic() < deadline, "the Ray head did not come up"
            time.sleep(2)
        yield address, f"http://127.0.0.1:{dashboard}", env
    finally:
        head.send_signal(signal.SIGTERM)  # --block: it stops the processes it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=30)
        left = session_processes(head.pid)  # and whatever is left (workers, fake nodes)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=30)
        log_file.close()


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
    """A moto S3 server in its own process on a free loopback port; killed at the end."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    moto_server = Path(sys.executable).parent / "moto_server"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **aws_env},
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}:\n{log.read_text()}")
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
