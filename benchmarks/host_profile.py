"""Where host-side time goes: the judging core's dry-run path (render, chat template,
tokenise, rows) over LLMBar pairs on one core, profiled, with the tokenizer's share.

    TOKENIZERS_PARALLELISM=false .venv/bin/python -m benchmarks.host_profile [--judge mt-bench]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time

from benchmarks.common import llmbar_pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--judge", default="mt-bench")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    from magistrate.actors.engine import EngineSettings, TokenizerEngine
    from magistrate.judges.core import Judge, JudgeSettings
    from magistrate.model_files import resolve_model

    pairs = llmbar_pairs()
    judge = Judge(TokenizerEngine(EngineSettings(model=resolve_model(None))),
                  JudgeSettings(judge=args.judge, mode="logprob"))
    batches = [pairs[i:i + args.batch] for i in range(0, len(pairs), args.batch)]
    judge.count_tokens(batches[0])  # warm: the template's compilation, the tokenizer's caches
    started = time.perf_counter()
    rows = [row for batch in batches for row in judge.count_tokens(batch)]
    seconds = time.perf_counter() - started
    tokens = sum((r.get("ab_prompt_tokens") or 0) + (r.get("ba_prompt_tokens") or 0) for r in rows)

    profile = cProfile.Profile()
    profile.enable()
    for batch in batches:
        judge.count_tokens(batch)
    profile.disable()
    stats = pstats.Stats(profile).stats
    total = max(v[3] for v in stats.values())  # cumulative time of the outermost call
    tokenizer = sum(v[2] for k, v in stats.items() if k[2] == "<method 'encode_batch' of 'tokenizers.Tokenizer' objects>")
    print(json.dumps({
        "judge": args.judge, "pairs": len(pairs), "pairs_per_s": round(len(pairs) / seconds),
        "prompt_tokens_per_pair": round(tokens / len(pairs), 1),
        "tokens_per_s": round(tokens / seconds), "tokenizer_share": round(tokenizer / total, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
