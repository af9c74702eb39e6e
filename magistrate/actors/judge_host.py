"""The judge host: one engine and the judging core, prepared pairs in, verdict columns out.

Not a Ray actor itself: pipelines/unit_worker.py runs one inside each Ray Data actor of
the pool. Its judge arrives resolved (JudgeSettings.resolved, in the driver): a host never
looks a judge up by name."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from magistrate.actors.engine import EngineSettings, TokenizerEngine, VLLMEngine
from magistrate.judges.combine import error_row
from magistrate.judges.core import Judge, JudgeSettings
from magistrate.pairs import INVALID, PROMPT_MESSAGES, judge_prompt
from magistrate.schema import run_constants, with_verdicts

logger = logging.getLogger(__name__)
_PAIR_COLUMNS = ("id", "prompt", PROMPT_MESSAGES, "response_a", "response_b", INVALID)
_WARM_UP = {"id": "warm-up", "prompt": "Say hello.", "response_a": "Hello.", "response_b": "Hi!"}


def engine_failure_rows(pairs: list[dict], message: str) -> list[dict]:
    """Rows for pairs whose host gave up: written off (judged again by --resume), except a
    bad input row, which stays what it is."""
    return [error_row(pair[INVALID]) if pair.get(INVALID) else error_row(message, written_off=True)
            for pair in pairs]


class JudgeHost:
    """Hosts an engine (vLLM, or only a tokenizer for a dry run) and the judging core."""

    def __init__(self, engine: EngineSettings, judge: JudgeSettings, run_id: str,
                 dry_run: bool = False, progress: Any = None, max_tries: int = 3):
        if judge.profile is None:
            raise ValueError("a judge host needs resolved settings (JudgeSettings.resolved())")
        self.dry_run, self.max_tries = dry_run, max_tries
        self.progress = progress  # an actor handle with add.remote(pairs, errors), or None
        self.engine_settings, self.judge_settings = engine, judge
        self.constants = run_constants(judge, engine.model, run_id, dry_run)
        self._start_engine()

    def _start_engine(self) -> None:
        self.engine = (TokenizerEngine if self.dry_run else VLLMEngine)(self.engine_settings)
        self.judge = Judge(self.engine, self.judge_settings)
        if not self.dry_run:
            # The engine's first requests pay one-off costs (seconds on CPU); pay them at
            # start, not inside the first unit (docs/performance.md: warm rate).
            self.judge.judge([_WARM_UP])

    def _judge(self, pairs: list[dict]) -> list[dict]:
        """Judge a batch; an engine that fails is rebuilt and the batch retried, and after
        max_tries the batch's pairs become error rows saying why (the job goes on). The
        engine is rebuilt after every failure, the last try's included, so the batches
        after a written-off one meet a working engine."""
        for attempt in range(1, self.max_tries + 1):
            if self.engine is None:
                self._start_engine()
            try:
                return self.judge.count_tokens(pairs) if self.dry_run else self.judge.judge(pairs)
            except Exception as exc:  # noqa: BLE001 - any engine failure costs a retry
                cause = f"{type(exc).__name__}: {exc}"[:500]
                logger.warning("judge engine failed (try %d of %d): %s", attempt, self.max_tries, cause)
                self.engine.shutdown()
                self.engine = None
        return engine_failure_rows(pairs, f"the judge engine failed {self.max_tries} times; last error: {cause}")

    def __call__(self, batch: pa.Table) -> pa.Table:
        pairs = batch.select([c for c in _PAIR_COLUMNS if c in batch.column_names]).to_pylist()
        pairs = [dict(p, prompt=judge_prompt(p)) for p in pairs]
        rows = self._judge(pairs)
        if self.progress is not None:
            self.progress.add.remote(len(rows), sum(r["winner"] == "error" for r in rows))
        return with_verdicts(batch, rows, self.constants)
