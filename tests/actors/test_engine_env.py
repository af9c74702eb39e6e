"""The engine's CPU threading settings reach the engine's processes (started while they
are set) and do not stay in the environment of the process that built it: a test session,
or a judge actor, keeps its own OMP_NUM_THREADS for everything it starts later."""

from __future__ import annotations

import os

import pytest

from magistrate.actors import engine as engine_module
from magistrate.actors.engine import EngineSettings, _Hosted

SET_FOR_THE_ENGINE = ("OMP_NUM_THREADS", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")


@pytest.fixture(autouse=True)
def cpu_build(monkeypatch):
    """As on the CPU build; torch's thread count is recorded, not changed in this process."""
    import torch

    monkeypatch.setattr(engine_module, "on_cpu", lambda: True)
    # No engine starts here (the build is a stand-in): not one for the start-up count.
    monkeypatch.setattr(engine_module.faults, "starting", lambda *args, **kwargs: None)
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    return threads


class _FakeLLM:
    def get_tokenizer(self):
        return None


@pytest.mark.parametrize("before", [None, "1"])
def test_threading_env_is_set_for_the_build_and_restored_after(monkeypatch, cpu_build, before):
    for name in SET_FOR_THE_ENGINE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MAGISTRATE_CPU_THREADS", raising=False)
    if before is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", before)  # as Ray sets it in a one-CPU actor
    seen = {}

    def build(kwargs):
        seen.update({name: os.environ.get(name) for name in SET_FOR_THE_ENGINE})
        return _FakeLLM()

    _Hosted()._start(EngineSettings(model="unused", verbose=True), build)
    # The engine's processes (started inside build) see every core and no binding ...
    assert seen == {"OMP_NUM_THREADS": str(len(os.sched_getaffinity(0))),
                    "VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert cpu_build == [len(os.sched_getaffinity(0))]
    # ... and this process's environment is as it was.
    assert os.environ.get("OMP_NUM_THREADS") == before
    assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ and "VLLM_CPU_NUM_OF_RESERVED_CPU" not in os.environ


def test_a_users_settings_are_kept(monkeypatch, cpu_build):
    monkeypatch.setenv("MAGISTRATE_CPU_THREADS", "3")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    seen = {}

    def build(kwargs):
        seen.update({name: os.environ.get(name) for name in SET_FOR_THE_ENGINE})
        return _FakeLLM()

    _Hosted()._start(EngineSettings(model="unused", verbose=True), build)
    assert seen["OMP_NUM_THREADS"] == "3" and seen["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert cpu_build == [3]
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
