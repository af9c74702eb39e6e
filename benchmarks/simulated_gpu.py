"""How full magistrate keeps a GPU it does not have: the real actor code (UnitWorker,
JudgeHost, the judging core, the real tokenizer, reading and publishing Parquet) on ONE host
core, driving a test double of the engine whose work is wall-clock time, not CPU.

    .venv/bin/python -m benchmarks.simulated_gpu                    # both modes, both paths
    .venv/bin/python -m benchmarks.simulated_gpu --pairs 4000 --mode generate
    .venv/bin/python -m benchmarks.simulated_gpu --pairs 100000 --gpus 4 --layout all \
        --mode logprob --path continuous --unit-rows 2048       # a pool of 4 on one file

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

`--gpus N`: a pool of N simulated GPUs, each its own UnitWorker and double, in one event
loop; they pull the units that magistrate's planning cut (`plan_input` + `cut_units`,
staged pieces in the output's `_staged/`) from one queue as Ray Data's actor pool hands
them out: the first units round the workers, then each free slot (UNITS_AT_ONCE a worker)
takes the next. Ray Data also queues one more unit in each actor
(max_tasks_in_flight_per_actor); that is not modelled. Per GPU, over the pool's wall
window (first unit handed out to last unit done, the same for all): units and pairs
judged, `busy_share` (time the double held at least one request), `token_rate_share`,
and the spread of both across GPUs. The host work of all N runs here, on up to N cores
(`--host-cores`; one per GPU in a real pool). `--layout`: the input, one file of
`--pairs` rows: `jsonl`, `one-row-group` (Parquet with pyarrow's defaults: one row
group), `row-groups` (row groups of `--unit-rows`), or `all`.
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
LAYOUTS = ("jsonl", "one-row-group", "row-groups")


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
        self.held: list[list] = []  # [from, to]: spans in which it had at least one request
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
        if not self.waiting and not self.running:
            self.held.append([time.monotonic(), None])
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
            if not self.waiting and not self.running:
                self.held[-1][1] = time.monotonic()

    def reset(self) -> None:
        """Forget what it did so far (the warm-up)."""
        self.steps.clear()
        self.held = [[time.monotonic(), None]] if self.waiting or self.running else []
        self.late_s = 0.0

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


def window_figures(engine: SimulatedGpuEngineDouble, start: float, end: float) -> dict:
    """One simulated GPU over the pool's wall window (the first unit handed out to the
    last unit done, the same window for every GPU): `busy_share`, the time it had at least
    one request in hand; `token_rate_share`, its tokens per second as a share of a full
    step's. A GPU whose units ran out early shows it here, unlike `steady_figures`."""
    window = end - start
    held = sum(max(0.0, min(b if b is not None else end, end) - max(a, start)) for a, b in engine.held)
    tokens = sum(t * max(0.0, min(b, end) - max(a, start)) / (b - a) for a, b, t in engine.steps if b > a)
    full_rate = MAX_BATCHED_TOKENS / step_seconds(MAX_BATCHED_TOKENS)
    return {"busy_share": round(held / window, 4), "token_rate_share": round(tokens / window / full_rate, 4)}


def write_input(folder: Path, pairs: int, layout: str, unit_rows: int) -> Path:
    """The same `pairs` LLMBar rows (ids p0, p1, ...) in one file of this layout:
    `jsonl`; `one-row-group`, Parquet as pyarrow writes it by default (one row group of up
    to 1,048,576 rows, as pandas' to_parquet does); `row-groups`, row groups of unit_rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = llmbar_pairs()
    rows = [dict(base[i % len(base)], id=f"p{i}") for i in range(pairs)]
    if layout == "jsonl":
        return write_jsonl(rows, folder / "pairs.jsonl")
    path = folder / "pairs.parquet"
    if layout == "one-row-group":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=unit_rows)
    return path


def _row_groups(path: Path) -> int | None:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_row_groups if path.suffix == ".parquet" else None


async def _drive(pairs: int, mode: str, path: str, units_at_once: int, unit_rows: int,
                 gpus: int = 1, layout: str = "jsonl") -> dict:
    """`gpus` unit workers, each with its own simulated GPU, in this process's event loop,
    pulling the units magistrate's planning cut (plan_input + cut_units) from one queue
    as Ray Data's actor pool hands them out: a worker takes the next unit whenever one of
    its `units_at_once` slots is free (one slot on the serial path)."""
    import magistrate.actors.judge_host as judge_host
    from magistrate.pipelines.judge_job import JobSettings
    from magistrate.pipelines.lease import Lease
    from magistrate.pipelines.sources import locate

    judge_host.AsyncVLLMEngine = SimulatedGpuEngineDouble  # the double in the engine's place
    with tempfile.TemporaryDirectory() as tmp:
        src = write_input(Path(tmp), pairs, layout, unit_rows)
        settings = JobSettings(input=str(src), output=f"{tmp}/out", judge="con-j", unit_rows=unit_rows)
        out = locate(settings.output)
        # The run holds the output's lease, as judge_job.run does: a worker checks it
        # before it publishes a unit (pipelines/lease.py).
        with Lease.acquire(out, "sim", take_over_stale=False):
            result = await _pool(settings, out, mode, path, units_at_once, gpus)
        return {"mode": mode, "path": path, "layout": layout, "input_row_groups": _row_groups(src), **result}


async def _pool(settings, out, mode: str, path: str, units_at_once: int, gpus: int) -> dict:
    import collections

    import pyarrow as pa

    from magistrate.actors.engine import EngineSettings
    from magistrate.judges.core import JudgeSettings
    from magistrate.pipelines.judge_job import cut_units, plan_input
    from magistrate.pipelines.unit_worker import UnitWorker

    planning = time.monotonic()
    plan = cut_units(settings, plan_input(settings), out)  # staged pieces: out/_staged/
    planning_s = time.monotonic() - planning
    judge = JudgeSettings(judge="con-j").resolved() if mode == "generate" else _logprob_con_j()
    workers = [UnitWorker(settings.input, settings.output, None, plan.mapping, plan.preset, 64,
                          {"engine": EngineSettings(model="simulated"), "judge": judge, "run_id": "sim"})
               for _ in range(gpus)]
    for worker in workers:
        if path == "serial":
            worker._judge = _serial(worker)
        await worker.judge._ready()  # engine built and warmed up, as before the first unit
    engines = [worker.judge.engine for worker in workers]
    for engine in engines:
        engine.reset()
    queue = collections.deque(plan.units)
    judged = [{"units": 0, "pairs": 0} for _ in workers]
    started = time.monotonic()

    async def slot(k: int) -> None:
        while queue:
            unit = queue.popleft()
            result = await workers[k](pa.Table.from_pylist([unit.as_row()]))
            judged[k]["units"] += 1
            judged[k]["pairs"] += result.column("rows")[0].as_py()

    # The first units go round the workers (Ray Data hands a unit to the least busy
    # actor); then each free slot takes the next.
    slots = units_at_once if path == "continuous" else 1
    await asyncio.gather(*(slot(k) for _ in range(slots) for k in range(gpus)))
    ended = time.monotonic()
    for engine in engines:
        engine.shutdown()
    total = sum(j["pairs"] for j in judged)
    per_gpu = [{"gpu": k, **judged[k], **window_figures(e, started, ended), "steps_late_s": round(e.late_s, 2)}
               for k, e in enumerate(engines)]
    result = {"gpus": gpus, "pairs": total, "units": len(plan.units), "unit_rows": settings.unit_rows,
              "unit_rows_min_max": [min(u.rows for u in plan.units), max(u.rows for u in plan.units)],
              "staged_units": sum(bool(u.staged) for u in plan.units),
              "planning_s": round(planning_s, 2), "wall_s": round(ended - started, 2),
              "simulated_pairs_per_s": round(total / (ended - started), 1)}
    if gpus == 1:  # the single-GPU figures as before: over the steady window
        result.update(steady_figures(engines[0].steps, engines[0].last_arrival),
                      steps_late_s=round(engines[0].late_s, 2))
    busy = [g["busy_share"] for g in per_gpu]
    rate = [g["token_rate_share"] for g in per_gpu]
    return {**result, "per_gpu": per_gpu,
            "busy_share_spread": round(max(busy) - min(busy), 4),
            "token_rate_share_spread": round(max(rate) - min(rate), 4)}


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
    parser.add_argument("--gpus", type=int, default=1, help="simulated GPUs, each its own unit worker")
    parser.add_argument("--layout", choices=(*LAYOUTS, "all"), default="jsonl",
                        help="the input: one file of --pairs rows in this layout")
    parser.add_argument("--host-cores", type=int, default=None,
                        help="cores the process may use (default: 1 for one GPU, else up to one per GPU)")
    args = parser.parse_args()
    available = sorted(os.sched_getaffinity(0))
    cores = args.host_cores or (1 if args.gpus == 1 else min(args.gpus, len(available)))
    os.sched_setaffinity(0, set(available[:cores]))
    from magistrate.pipelines.unit_worker import UNITS_AT_ONCE

    results = []
    for layout in (LAYOUTS if args.layout == "all" else (args.layout,)):
        for mode in (("generate", "logprob") if args.mode == "both" else (args.mode,)):
            for path in (("continuous", "serial") if args.path == "both" else (args.path,)):
                results.append(asyncio.run(_drive(args.pairs, mode, path, args.units_at_once or UNITS_AT_ONCE,
                                                  args.unit_rows, args.gpus, layout)))
                print(json.dumps({**results[-1], "host_cores": cores}), flush=True)


if __name__ == "__main__":
    main()
