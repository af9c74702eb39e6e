"""The Ray Data judge actor: one vLLM engine per actor, pairs in, verdict columns out."""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa

from magistrate.actors.engine import EngineSettings, TokenizerEngine, VLLMEngine
from magistrate.judges.core import Judge, JudgeSettings
from magistrate.schema import verdict_table

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


class JudgeActor:
    """Callable class for `Dataset.map_batches`."""

    def __init__(self, engine: EngineSettings, judge: JudgeSettings, run_id: str,
                 dry_run: bool = False, progress: Any = None):
        self.dry_run = dry_run
        self.progress = progress  # an actor handle with add.remote(pairs, errors), or None
        self.engine = TokenizerEngine(engine) if dry_run else VLLMEngine(engine)
        self.judge = Judge(self.engine, judge)
        self.constants = {
            "judge": self.judge.profile.name,
            "judge_version": self.judge.profile.version,
            "mode": "dry-run" if dry_run else self.judge.mode,
            "order": judge.order,
            "model": engine.model,
            "run_id": run_id,
        }
        self.pid = os.getpid()

    def __call__(self, batch: pa.Table) -> pa.Table:
        pairs = batch.select([c for c in _PAIR_COLUMNS if c in batch.column_names]).to_pylist()
        pairs = [dict(p, prompt=p.get("prompt_messages") or p["prompt"], invalid=p.get(INVALID))
                 for p in pairs]
        rows = self.judge.count(pairs) if self.dry_run else self.judge.judge(pairs)
        verdicts = verdict_table(rows, self.constants)
        if self.progress is not None:
            self.progress.add.remote(len(rows), sum(r["winner"] == "error" for r in rows))
        kept = batch.drop_columns([INVALID])
        for field in verdicts.schema:
            kept = kept.append_column(field, verdicts.column(field.name))
        return kept
