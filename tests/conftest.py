"""Shared fixtures. The embedded judge is prepared once (cached across runs, like `make
setup` does) and at most one in-process vLLM engine is started per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "data"
MAGISTRATE = [sys.executable, "-m", "magistrate.pipelines.cli"]


@pytest.fixture(scope="session")
def embedded_model() -> str:
    from magistrate.models import prepare_embedded

    return str(prepare_embedded())


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
