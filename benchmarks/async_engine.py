"""Where feed's logprob gap sits: vLLM's offline `LLM` against its `AsyncLLM` (the engine
magistrate's actors and Serve replicas drive), then magistrate's own path on that async
engine, all in one process on the same pre-tokenised prompts, each timed --repeats times
with the prefix cache reset before each run. Also the CPU this (client) process uses
during a run, which on two cores is taken from the engine. Prints one JSON object.

    .venv/bin/python -m benchmarks.async_engine --pairs 72
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from benchmarks.bare_engine import cpu_seconds, timed_generate
from benchmarks.common import llmbar_pairs


def offline(settings, pairs, skip: int, repeats: int) -> list:
    from vllm import TokensPrompt

    from magistrate.actors.engine import VLLMEngine, logprob_params
    from magistrate.judges.core import Judge, JudgeSettings

    engine = VLLMEngine(settings)
    judge = Judge(engine, JudgeSettings(mode="logprob", order="both"))
    judge.judge(pairs[:skip])  # the first requests' one-off costs, outside the timing
    prompts = [TokensPrompt(prompt_token_ids=r.tokens) for r in judge.requests(pairs[skip:])[1]]
    runs, _ = timed_generate(engine, prompts, logprob_params(list(dict.fromkeys(judge.label_ids.values()))), repeats)
    engine.shutdown()
    return runs


async def online(settings, pairs, skip: int, repeats: int, batch: int) -> dict:
    from magistrate.actors.engine import AsyncVLLMEngine
    from magistrate.judges.core import Judge, JudgeSettings

    engine = AsyncVLLMEngine(settings)
    judge = Judge(engine, JudgeSettings(mode="logprob", order="both"))
    await judge.judge_async(pairs[:skip])
    work = pairs[skip:]
    prompts = [r.tokens for r in judge.requests(work)[1]]
    candidates = list(dict.fromkeys(judge.label_ids.values()))
    paths = {
        # every pre-tokenised prompt in one call: the async engine alone
        "async_engine_one_call": lambda: engine.next_token_logprobs(prompts, candidates),
        # rendering, tokenising, reading verdicts included, batches side by side as a unit worker sends them
        "magistrate_batches": lambda: asyncio.gather(*(judge.judge_async(work[i:i + batch])
                                                       for i in range(0, len(work), batch))),
    }
    runs: dict = {name: [] for name in paths}
    for _ in range(repeats):
        for name, path in paths.items():  # alternating, so the machine's drift falls on both
            await engine.llm.reset_prefix_cache()
            started, cpu = time.perf_counter(), cpu_seconds()
            await path()
            runs[name].append({"s": round(time.perf_counter() - started, 2),
                               "client_cpu_s": round(cpu_seconds() - cpu, 2)})
    engine.shutdown()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=72)
    parser.add_argument("--skip", type=int, default=4, help="first LLMBar pairs left out (they warm the engine)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--compilation", choices=("eager", "compiled"), default="compiled")
    args = parser.parse_args()

    from magistrate.actors.engine import EngineSettings
    from magistrate.model_files import resolve_model

    settings = EngineSettings(model=resolve_model(None), enforce_eager=args.compilation == "eager")
    pairs = llmbar_pairs(args.skip + args.pairs)
    result = {"pairs": args.pairs, "compilation": args.compilation,
              "offline_llm": offline(settings, pairs, args.skip, args.repeats)}
    result.update(asyncio.run(online(settings, pairs, args.skip, args.repeats, args.batch_size)))
    print(json.dumps(result))


if __name__ == "__main__":  # vLLM spawns its EngineCore, which imports this file again
    main()
