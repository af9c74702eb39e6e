"""The ceiling: a bare vLLM `LLM.generate` given every prompt of the workload at once, with
the CPU threads magistrate's engine gets and the compilation asked for (vLLM's default:
compiled). The prompts are the judge's own, rendered and tokenised outside the timing; in
generate mode the sampling is the judge's (greedy, its token cap, stop strings and the
label tokens' log-probabilities), so both sides decode the same tokens and do the same
work. Prints one JSON object.

    .venv/bin/python -m benchmarks.bare_engine --pairs 48 --mode generate --judge mt-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

from benchmarks.common import llmbar_pairs


def cpu_seconds() -> float:
    """CPU time of this (the engine's client) process: on two cores, what the engine misses."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_generate(engine, prompts, params, repeats: int) -> tuple[list[dict], list]:
    """The offline engine given every prompt at once, `repeats` times, the prefix cache reset
    before each: each run's seconds and client CPU-seconds, and the last run's outputs."""
    runs, outputs = [], []
    for _ in range(repeats):
        engine.llm.reset_prefix_cache()
        started, cpu = time.perf_counter(), cpu_seconds()
        outputs = engine.llm.generate(prompts, params, use_tqdm=False)
        runs.append({"s": round(time.perf_counter() - started, 2), "client_cpu_s": round(cpu_seconds() - cpu, 2)})
    return runs, outputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--skip", type=int, default=4, help="first LLMBar pairs left out (they warm the engine)")
    parser.add_argument("--mode", choices=("logprob", "generate"), default="logprob")
    parser.add_argument("--judge", default="mt-bench")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--compilation", choices=("eager", "compiled"), default="compiled")
    parser.add_argument("--warm-up", choices=("pairs", "short"), default="pairs",
                        help="pairs: judge the skipped pairs first; short: judge only the short pair "
                             "magistrate's judge host warms its engine with (judges/core.py), "
                             "both orders (the host sends one order, at most 8 tokens)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time the whole workload this many times on the one engine (prefix cache reset "
                             "before each); the fastest counts, as this machine's pace drifts by 20%% between runs")
    parser.add_argument("--no-verdict-logprobs", action="store_true",
                        help="generate mode: skip the label tokens' log-probabilities the judge asks "
                             "for at each step (p_a from the verdict token), to see what they cost")
    args = parser.parse_args()

    from vllm import TokensPrompt

    from magistrate.actors.engine import EngineSettings, VLLMEngine, greedy_params, logprob_params
    from magistrate.judges.core import Judge, JudgeSettings
    from magistrate.model_files import resolve_model

    started = time.monotonic()
    engine = VLLMEngine(EngineSettings(model=resolve_model(None), enforce_eager=args.compilation == "eager"))
    start_s = time.monotonic() - started
    judge = Judge(engine, JudgeSettings(judge=args.judge, mode=args.mode, order="both",
                                        max_new_tokens=args.max_new_tokens))
    pairs = llmbar_pairs(args.skip + args.pairs)
    if args.warm_up == "pairs":
        judge.judge(pairs[:args.skip])  # the first requests' one-off costs, paid outside the timing
    else:
        from magistrate.judges.core import WARM_UP_PAIR

        judge.judge([WARM_UP_PAIR])
    prompts = [TokensPrompt(prompt_token_ids=r.tokens) for r in judge.requests(pairs[args.skip:])[1]]
    if args.mode == "logprob":
        params = logprob_params(list(dict.fromkeys(judge.label_ids.values())))
    else:
        # The judge's own sampling: its cap, stop strings and label tokens' log-probabilities.
        params = greedy_params(judge.max_new_tokens, judge.profile.stop,
                               () if args.no_verdict_logprobs else judge.form_ids)
    runs, outputs = timed_generate(engine, prompts, params, args.repeats)
    times = [run["s"] for run in runs]
    seconds = min(times)
    lengths = sorted(len(o.outputs[0].token_ids) for o in outputs)
    engine.shutdown()
    print(json.dumps({
        "mode": args.mode, "judge": args.judge, "compilation": args.compilation, "pairs": args.pairs,
        "warm_up": args.warm_up, "verdict_logprobs": args.mode == "generate" and not args.no_verdict_logprobs,
        "prompts": len(prompts), "engine_start_s": round(start_s, 1), "seconds": round(seconds, 2), "runs_s": times,
        "pairs_per_s": round(args.pairs / seconds, 3),
        "completion_tokens": {"mean": round(statistics.fmean(lengths), 1), "min": lengths[0],
                              "median": lengths[len(lengths) // 2], "max": lengths[-1]},
    }))


if __name__ == "__main__":
    main()
