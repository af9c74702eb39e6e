"""A judge host whose engine dies under several batches at once: every batch's rows name
the failure that brought the engine down. Seen in a fault test: the batch that noticed
first shut the engine down, and the batches still in flight failed on the stopped engine
with "AttributeError: 'NoneType' object has no attribute 'renderer'", the rows' only cause.

The engine is a test double (`DyingEngineDouble`): what is under test is the host's
bookkeeping of failures, which no real engine can be made to die for on cue here."""

from __future__ import annotations

import asyncio

from magistrate.actors import judge_host
from magistrate.actors.engine import EngineSettings
from magistrate.judges.core import JudgeSettings


class DyingEngineDouble:
    """Dies on the first request; a request after `shutdown` fails as a stopped vLLM
    engine does (its `llm` is gone)."""

    def __init__(self, settings):
        self.llm = object()

    def shutdown(self):
        self.llm = None


class JudgeOnDyingEngineDouble:
    def __init__(self, engine, settings):
        self.engine = engine

    async def warm_up_async(self):
        pass

    async def judge_async(self, pairs):
        await asyncio.sleep(0.2 * (len(pairs[0]["id"]) - 1))  # the batches come one after another
        if self.engine.llm is None:
            raise AttributeError("'NoneType' object has no attribute 'renderer'")
        raise RuntimeError("EngineDeadError: EngineCore encountered an issue")


def test_batches_on_an_engine_that_died_all_name_its_failure(monkeypatch):
    monkeypatch.setattr(judge_host, "AsyncVLLMEngine", DyingEngineDouble)
    monkeypatch.setattr(judge_host, "Judge", JudgeOnDyingEngineDouble)
    host = judge_host.JudgeHost(EngineSettings(model="double"), JudgeSettings().resolved(), "run-1", max_tries=1)

    async def three_batches():
        pairs = [[{"id": "p" * k, "prompt": "q", "response_a": "a", "response_b": "b"}] for k in (1, 2, 3)]
        return await asyncio.gather(*(host._judge(batch) for batch in pairs))

    rows = [row for batch in asyncio.run(three_batches()) for row in batch]
    assert len(rows) == 3 and all(r["winner"] == "error" and r["written_off"] for r in rows)
    causes = {r["error"] for r in rows}
    assert causes == {"the judge engine failed 1 times; last error: RuntimeError: EngineDeadError: EngineCore "
                      "encountered an issue"}, causes
