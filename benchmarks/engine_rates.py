"""Engine-bound rates on one vLLM engine, in one process: the bare engine (`LLM.generate`
over the judge's own rendered prompts) against the judging core on the same prompts, one
order against both, logprob against generate. Prints one JSON object.

    .venv/bin/python -m benchmarks.engine_rates --pairs 64 [--no-prefix-caching]
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.common import llmbar_pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--generate-pairs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per engine call, as `judge --batch-size`")
    parser.add_argument("--no-prefix-caching", action="store_true")
    parser.add_argument("--judge", default="mt-bench")
    parser.add_argument("--repeats", type=int, default=2,
                        help="interleaved runs of each; the fastest counts (a noisy shared machine)")
    args = parser.parse_args()

    from vllm import TokensPrompt

    from magistrate.actors.engine import EngineSettings, VLLMEngine, logprob_params
    from magistrate.judges.core import Judge, JudgeSettings
    from magistrate.model_files import resolve_model

    started = time.monotonic()
    engine = VLLMEngine(EngineSettings(model=resolve_model(None),
                                       enable_prefix_caching=not args.no_prefix_caching))
    result = {"engine_start_s": round(time.monotonic() - started, 1),
              "prefix_caching": not args.no_prefix_caching, "pairs": args.pairs}
    warm, pairs = llmbar_pairs(args.pairs + 4)[:4], llmbar_pairs(args.pairs + 4)[4:]
    chunks = [pairs[i:i + args.batch_size] for i in range(0, len(pairs), args.batch_size)]

    def timed(fn) -> float:
        engine.llm.reset_prefix_cache()  # no run profits from the one before
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    both = Judge(engine, JudgeSettings(judge=args.judge, mode="logprob", order="both"))
    both.judge(warm)  # first calls pay one-off costs; every timed run starts warm

    # The bare loop is handed prompts already tokenised, outside its timing.
    planned = [both.requests(chunk)[1] for chunk in chunks]
    candidates = list(dict.fromkeys(both.label_ids.values()))

    def bare_engine():
        for requests in planned:
            engine.llm.generate([TokensPrompt(prompt_token_ids=r.tokens) for r in requests],
                                logprob_params(candidates), use_tqdm=False)

    one = Judge(engine, JudgeSettings(judge=args.judge, mode="logprob", order="ab"))
    runs = {"bare_engine_both": bare_engine,
            "core_logprob_both": lambda: [both.judge(c) for c in chunks],
            "core_logprob_ab": lambda: [one.judge(c) for c in chunks]}
    seconds: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits all alike
        for name, fn in runs.items():
            seconds[name] = min(seconds.get(name, float("inf")), timed(fn))
    result["repeats"] = args.repeats
    if args.generate_pairs:
        generate = Judge(engine, JudgeSettings(judge=args.judge, mode="generate", order="both"))
        subset = pairs[:args.generate_pairs]
        seconds["core_generate_both"] = timed(lambda: generate.judge(subset))
        result["generate_pairs"] = len(subset)
        rows = generate.judge(subset[:1])
        result["generate_completion_tokens_first_pair"] = (rows[0]["ab_completion_tokens"] or 0) + (
            rows[0]["ba_completion_tokens"] or 0)
    result["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    result["pairs_per_s"] = {
        k: round((result.get("generate_pairs", args.pairs) if "generate" in k else args.pairs) / v, 3)
        for k, v in seconds.items()
    }
    engine.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
