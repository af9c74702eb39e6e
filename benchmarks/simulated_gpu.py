"""How full magistrate keeps a GPU it does not have: the real actor code (UnitWorker,
JudgeHost, the judging core, the real tokenizer, reading and publishing Parquet) on ONE host
core, driving a test double of the engine whose work is wall-clock time, not CPU.

    .venv/bin/python -m benchmarks.simulated_gpu                    # both modes, both paths
    .venv/bin/python -m benchmarks.simulated_gpu --pairs 4000 --mode generate

`SimulatedGpuEngineDouble` models vLLM's continuous batching of Con-J-Qwen2-7B (7.6B
parameters, bf16) on one H100 with the roofline of pipelines/estimate.py:
- a scheduler step takes max(compute, weights) seconds, compute = 2 x parameters FLOPs per
  token scheduled (prefill and decode tokens) at PREFILL_MFU of the bf16 peak, weights = one
  read of the weights at the memory bandwidth (decode is memory-bound);
- a step schedules at most MAX_NUM_SEQS sequences and MAX_BATCHED_TOKENS tokens (vLLM's
  defaults: 256 sequences, 8192 tokens with chunked prefill); prompts are prefilled in
  chunks, then each running sequence decodes one token per step;
- generate mode: each order's output length is drawn (seeded by the prompt) from a
  log-normal with median 150 tokens and sigma 0.7, capped at the profile's 1024 tokens, a
  stand-in for Con-J rationales; the text is a Con-J JSON verdict the real reader reads;
- logprob mode: prefill only, one next-token distribution per order.
The steps are `asyncio.sleep`s, so the one host core is free for magistrate's own work,
as the GPU leaves it in a real run. Two figures over the steady window (from the first
engine step to the last request's arrival; the final drain, when nothing is left to send,
is not the host's doing): `busy_share`, the wall time in which the double had any work,
and `token_rate_share`, its token rate as a share of a full step's (8192 tokens per step).
The second is the one that predicts a GPU run: a batch whose last long rationale decodes
alone keeps the GPU "busy" at a few tokens per step.

Units are 512 rows (`--unit-rows`; the job's default is 2,048): a unit lasts at least as
long as its longest rationale, so small units in flight together can all be in their tails
at once (128-row units gave 0.91 on 2026-12-02). `steps_late_s` is how long the double's
steps woke late because the one host core was busy: a real EngineCore is its own process,
so that time is the double's pessimism, not the GPU's.

`--path serial` replays the old path for comparison: one batch at a time, host work between
batches while the engine waits (a unit's batches judged in turn, one unit at a time).
The host-side tokenizer is the embedded judge's (SmolLM2), standing in for Qwen2's.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import llmbar_pairs, write_jsonl

PARAMS = 7.6e9
PEAK, BANDWIDTH = 989e12, 3.35e12  # H100 SXM: dense bf16 FLOP/s, HBM bytes/s
MFU = 0.4
MAX_NUM_SEQS, MAX_BATCHED_TOKENS = 256, 8192
MEDIAN_OUT, SIGMA_OUT = 150, 0.7


def step_seconds(tokens: int) -> float:
    """One scheduler step on the simulated GPU: compute- or weight-read-bound."""
    return max(2 * PARAMS * tokens / (PEAK * MFU), 2 * PARAMS / BANDWIDTH)


def steady_figures(steps: list[tuple[float, float, int]], until: float) -> dict:
    """Over the steady window (the first step to the last request's arrival): the share of
    wall time the double had work, and its token rate as a share of a full step's rate
    (MAX_BATCHED_TOKENS per step: what a GPU given enough work does)."""
    start = steps[0][0]
    window = until - start
    inside = [(a, min(b, until), t * (min(b, until) - a) / (b - a)) for a, b, t in steps if a < until]
    busy = sum(b - a for a, b, _ in inside)
    tokens = sum(t for _, _, t in inside)
    full_rate = MAX_BATCHED_TOKENS / step_seconds(MAX_BATCHED_TOKENS)
    return {"steady_s": round(window, 2), "busy_share": round(busy / window, 4),
            "token_rate_share": round(tokens / window / full_rate, 4)}


class SimulatedGpuEngineDouble:
    """A test double of actors/engine.AsyncVLLMEngine: same methods, wall-clock work."""

    model = "simulated-con-j-qwen2-7b-on-h100"

    def __init__(self, settings=None):
        from magistrate.model_files import load_tokenizer, resolve_model

        self.tokenizer = load_tokenizer(resolve_model(None))
        self.max_model_len = 32768
        self.waiting: list[dict] = []
        self.running: list[dict] = []
        self.steps: list[tuple[float, float, int]] = []  # (start, end, tokens scheduled)
        self.last_arrival = 0.0
        self.late_s = 0.0
        self._wake: asyncio.Event | None = None
        self._loop_task = None

    # --- the scheduler ---------------------------------------------------------------
    def _submit(self, prompt: list[int], out_tokens: int) -> asyncio.Future:
        if self._loop_task is None:
            self._wake = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._schedule())
        done = asyncio.get_running_loop().create_future()
        self.waiting.append({"prefill": len(prompt), "decode": out_tokens, "done": done})
        self.last_arrival = time.monotonic()
        self._wake.set()
        return done

    async def _schedule(self) -> None:
        while True:
            if not self.waiting and not self.running:
                self._wake.clear()
                await self._wake.wait()
            budget, scheduled = MAX_BATCHED_TOKENS, 0
            decoding = [s for s in self.running if s["prefill"] == 0]
            for s in decoding[:MAX_NUM_SEQS]:
                budget -= 1
                scheduled += 1
            # Chunked prefill of running-then-waiting sequences within the token budget.
            while budget > 0 and (len(self.running) < MAX_NUM_SEQS) and self.waiting:
                self.running.append(self.waiting.pop(0))
            prefill_tokens = 0
            for s in self.running:
                if s["prefill"] and budget > 0:
                    take = min(s["prefill"], budget)
                    s["prefill"] -= take
                    budget -= take
                    prefill_tokens += take
            tokens = scheduled + prefill_tokens
            started = time.monotonic()
            await asyncio.sleep(step_seconds(tokens))
            self.steps.append((started, time.monotonic(), tokens))
            # A step wakes late when the host's event loop is busy: a real EngineCore runs
            # in its own process, so this lateness is the double's pessimism, kept in view.
            self.late_s += time.monotonic() - started - step_seconds(tokens)
            for s in decoding[:MAX_NUM_SEQS]:
                s["decode"] -= 1
            finished = [s for s in self.running if s["prefill"] == 0 and s["decode"] <= 0]
            self.running = [s for s in self.running if s not in finished]
            for s in finished:
                s["done"].set_result(None)

    # --- the engine's methods ----------------------------------------------------------
    async def next_token_logprobs(self, prompts, candidates):
        await asyncio.gather(*(self._submit(p, 0) for p in prompts))
        return [{t: math.log(0.6 if i == 0 else 0.4) for i, t in enumerate(candidates)} for _ in prompts]

    async def generate(self, prompts, max_tokens, stop=(), label_ids=()):
        lengths = [min(max_tokens, max(8, round(random.Random(hashlib.sha256(str(p).encode()).digest())
                                               .lognormvariate(math.log(MEDIAN_OUT), SIGMA_OUT))))
                   for p in prompts]
        await asyncio.gather(*(self._submit(p, n) for p, n in zip(prompts, lengths)))
        side = lambda p: 1 + sum(p) % 2  # noqa: E731
        return [(json.dumps({"原因": "好" * n, "更好的回答": side(p)}, ensure_ascii=False), n)
                for p, n in zip(prompts, lengths)]

    async def check_health(self):
        return None

    def shutdown(self):
        if self._loop_task is not None:
            self._loop_task.cancel()


async def _drive(pairs: int, mode: str, path: str, units_at_once: int, unit_rows: int) -> dict:
    import pyarrow as pa

    import magistrate.actors.judge_host as judge_host
    from magistrate.actors.engine import EngineSettings
    from magistrate.judges.core import JudgeSettings
    from magistrate.pipelines.judge_job import JobSettings, plan_input
    from magistrate.pipelines.unit_worker import UnitWorker

    judge_host.AsyncVLLMEngine = SimulatedGpuEngineDouble  # the double in the engine's place
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pairs.jsonl"
        rows = llmbar_pairs()
        write_jsonl([dict(rows[i % len(rows)], id=f"p{i}") for i in range(pairs)], src)
        settings = JobSettings(input=str(src), output=f"{tmp}/out", judge="con-j", unit_rows=unit_rows)
        plan = plan_input(settings)
        judge = JudgeSettings(judge="con-j").resolved() if mode == "generate" else _logprob_con_j()
        worker = UnitWorker(str(src), f"{tmp}/out", None, plan.mapping, plan.preset, 64,
                            {"engine": EngineSettings(model="simulated"), "judge": judge, "run_id": "sim"})
        if path == "serial":
            worker._judge = _serial(worker)
        await worker.judge._ready()  # engine built and warmed up, as before the first unit
        engine = worker.judge.engine
        engine.steps.clear()
        engine.late_s = 0.0
        gate = asyncio.Semaphore(units_at_once if path == "continuous" else 1)
        started = time.monotonic()

        async def one(unit):
            async with gate:
                return await worker(pa.Table.from_pylist([unit.as_row()]))

        results = await asyncio.gather(*(one(u) for u in plan.units))
        ended = time.monotonic()
        judged = sum(r.column("rows")[0].as_py() for r in results)
        return {"mode": mode, "path": path, "pairs": judged, "units": len(plan.units), "wall_s": round(ended - started, 2),
                "simulated_pairs_per_s": round(judged / (ended - started), 1),
                **steady_figures(engine.steps, engine.last_arrival),
                "unit_rows": unit_rows, "steps_late_s": round(engine.late_s, 2)}


def _logprob_con_j():
    """Con-J is generate-only; logprob mode is measured with the same model and prompts
    through mt-bench's profile (a label token read after "[[")."""
    from magistrate.judges.core import JudgeSettings

    return JudgeSettings(judge="mt-bench", mode="logprob").resolved()


def _serial(worker):
    async def judge(table):
        import pyarrow as pa

        parts = [await worker.judge(table.slice(i, worker.batch_size))
                 for i in range(0, table.num_rows, worker.batch_size)]
        return pa.concat_tables(parts)
    return judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3072)
    parser.add_argument("--mode", choices=("both", "generate", "logprob"), default="both")
    parser.add_argument("--units-at-once", type=int, default=None)
    parser.add_argument("--unit-rows", type=int, default=512)
    parser.add_argument("--path", choices=("both", "continuous", "serial"), default="both")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one host core
    from magistrate.pipelines.unit_worker import UNITS_AT_ONCE

    results = []
    for mode in (("generate", "logprob") if args.mode == "both" else (args.mode,)):
        for path in (("continuous", "serial") if args.path == "both" else (args.path,)):
            results.append(asyncio.run(_drive(args.pairs, mode, path, args.units_at_once or UNITS_AT_ONCE,
                                       args.unit_rows)))
            print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
