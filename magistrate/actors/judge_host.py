"""The judge host: one engine and the judging core, prepared pairs in, verdict columns out.

Not a Ray actor itself: pipelines/unit_worker.py runs one inside each Ray Data actor of
the pool. Its judge arrives resolved (JudgeSettings.resolved, in the driver): a host never
looks a judge up by name."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pyarrow as pa

from magistrate import faults
from magistrate.actors import metrics
from magistrate.actors.engine import AsyncVLLMEngine, EngineSettings, TokenizerEngine
from magistrate.judges.combine import error_row
from magistrate.judges.core import Judge, JudgeSettings
from magistrate.pairs import INVALID, PROMPT_MESSAGES, judge_prompt
from magistrate.schema import run_constants, with_verdicts

logger = logging.getLogger(__name__)
_PAIR_COLUMNS = ("id", "prompt", PROMPT_MESSAGES, "response_a", "response_b", INVALID)


# Engine starts a host tries, back to back, before it says its engine cannot start: a
# start refused for too little memory, a model vLLM cannot load or a setting it rejects
# fails the same way every time, and each try costs minutes on a large model.
START_TRIES = 2


class EngineStartFailed(RuntimeError):
    """The host's engine failed to start START_TRIES times; the message is the last reason.
    The host tries no more: every later call raises this at once."""


def engine_failure_rows(pairs: list[dict], message: str) -> list[dict]:
    """Rows for pairs whose host gave up: written off (judged again by --resume), except a
    bad input row, which stays what it is."""
    return [error_row(pair[INVALID]) if pair.get(INVALID) else error_row(message, written_off=True)
            for pair in pairs]


class JudgeHost:
    """Hosts an engine (vLLM's async one, or only a tokenizer for a dry run) and the
    judging core. Its calls are coroutines: a unit worker runs several units at once
    (pipelines/unit_worker.py), so the engine always has the next batches while one is
    read, prepared or published, and the host work runs beside the engine (docs/performance.md)."""

    def __init__(self, engine: EngineSettings, judge: JudgeSettings, run_id: str,
                 dry_run: bool = False, progress: Any = None, max_tries: int = 3):
        if judge.profile is None:
            raise ValueError("a judge host needs resolved settings (JudgeSettings.resolved())")
        self.dry_run, self.max_tries = dry_run, max_tries
        self.progress = progress  # an actor handle with add.remote(pairs, errors), or None (progress.py)
        self.engine_settings, self.judge_settings = engine, judge
        self.constants = run_constants(judge, engine.model, run_id, dry_run)
        self.engine = self.judge = None
        self._built = 0  # engines built so far: which one a failure belongs to
        self._failures: dict[int, str] = {}  # engine number -> the failure that brought it down
        self._cannot_start: str | None = None  # why the engine could not start (EngineStartFailed)
        self._lock: asyncio.Lock | None = None
        if dry_run:
            self.engine = TokenizerEngine(engine)
            self.judge = Judge(self.engine, judge)

    async def ready(self) -> None:
        """Build and warm up the engine now (a dry run's is built already)."""
        if not self.dry_run:
            await self._ready()

    async def _ready(self) -> int:
        """The engine, built (and warmed up) once however many callers wait for it; the
        number of the engine they got."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.engine is None:
                self.engine = await self._start()
                self.judge = Judge(self.engine, self.judge_settings)
                self._built += 1
                self._tell("started")
                if self._built > 1:
                    metrics.add("magistrate_engine_restarts", 1, judge=self.judge_settings.judge)
                # The engine's first requests pay one-off costs (seconds on CPU); pay them
                # here, not inside the first unit (docs/performance.md: warm rate).
                await self.judge.warm_up_async()
            return self._built

    async def _start(self) -> AsyncVLLMEngine:
        """A started engine, or EngineStartFailed after START_TRIES refused starts."""
        if self._cannot_start is None:
            for attempt in range(1, START_TRIES + 1):
                try:
                    return await asyncio.to_thread(AsyncVLLMEngine, self.engine_settings)
                except Exception as exc:  # noqa: BLE001 - vLLM's reasons are many; each is told
                    reason = f"{type(exc).__name__}: {exc}"[:1000]
                    logger.warning("the judge engine failed to start (try %d of %d): %s", attempt, START_TRIES,
                                   reason)
            self._cannot_start = reason
        raise EngineStartFailed(self._cannot_start)

    async def _discard(self, built: int) -> None:
        """Shut the failed engine down, once, whoever of its callers notices first."""
        async with self._lock:
            if self.engine is not None and self._built == built:
                engine, self.engine = self.engine, None
                await asyncio.to_thread(engine.shutdown)
                self._tell("stopped")

    def _tell(self, event: str) -> None:
        if self.progress is not None:
            import ray

            self.progress.engine.remote(event, ray.get_runtime_context().get_actor_id())

    def close(self) -> None:
        """Stop the engine now (the unit worker's pool actor is being released): its
        processes stop while the driver waits, before the summary (pipelines/progress.py)."""
        engine, self.engine = self.engine, None
        if engine is not None and not self.dry_run:
            engine.shutdown()
            self._tell("stopped")

    async def _judge(self, pairs: list[dict]) -> list[dict]:
        """Judge a batch; an engine that fails is rebuilt and the batch retried, and after
        max_tries the batch's pairs become error rows saying why (the job goes on). The
        engine is rebuilt after every failure, the last try's included, so the batches
        after a written-off one meet a working engine."""
        if self.dry_run:
            return await asyncio.to_thread(self.judge.count_tokens, pairs)
        for attempt in range(1, self.max_tries + 1):
            built = await self._ready()
            await faults.point_async("engine_call")
            try:
                return await self.judge.judge_async(pairs)
            except Exception as exc:  # noqa: BLE001 - any engine failure costs a retry
                # Batches in flight on an engine that failed fail too, some only once another
                # caller has shut it down (with an AttributeError of the stopped engine): each
                # names the failure that brought the engine down.
                cause = self._failures.setdefault(built, f"{type(exc).__name__}: {exc}"[:500])
                logger.warning("judge engine failed (try %d of %d): %s; vLLM's log: %s", attempt, self.max_tries,
                               cause, getattr(self.engine, "log_path", None) or "above")
                await self._discard(built)
        return engine_failure_rows(pairs, f"the judge engine failed {self.max_tries} times; last error: {cause}")

    async def __call__(self, batch: pa.Table) -> pa.Table:
        pairs = batch.select([c for c in _PAIR_COLUMNS if c in batch.column_names]).to_pylist()
        pairs = [dict(p, prompt=judge_prompt(p)) for p in pairs]
        rows = await self._judge(pairs)
        metrics.record_rows(self.judge_settings.judge, rows, pairs)
        if self.progress is not None:
            self.progress.add.remote(len(rows), sum(r["winner"] == "error" for r in rows))
        return await asyncio.to_thread(with_verdicts, batch, rows, self.constants,
                                       self.judge_settings.calibration is not None)
