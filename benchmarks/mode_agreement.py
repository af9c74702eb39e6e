"""How often the two verdict modes agree: the same judge and pairs in logprob mode (the
verdict token's probability right after the prompt, no explanation first) and generate
mode (the judge writes its explanation, then its marker; RewardBench's protocol). One
engine, both orders. Prints one JSON object; docs/judges.md has a run.

    .venv/bin/python -m benchmarks.mode_agreement --pairs 100 [--judge mt-bench] [--model M]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

from benchmarks.common import llmbar_pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--judge", default="mt-bench")
    parser.add_argument("--model", default=None, help="a local folder or hub id; default: the embedded judge")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="generate mode; default: the profile's")
    args = parser.parse_args()

    from magistrate.actors.engine import EngineSettings, VLLMEngine
    from magistrate.judges.core import Judge, JudgeSettings
    from magistrate.model_files import resolve_model

    pairs = [{"id": p["id"], "prompt": p["prompt"], "response_a": p["response_a"], "response_b": p["response_b"],
              "label": p.get("label")} for p in llmbar_pairs(args.pairs)]
    engine = VLLMEngine(EngineSettings(model=resolve_model(args.model), max_model_len=4096))
    rows, seconds = {}, {}
    for mode in ("logprob", "generate"):
        judge = Judge(engine, JudgeSettings(judge=args.judge, mode=mode, order="both",
                                            max_new_tokens=args.max_new_tokens))
        started = time.monotonic()
        rows[mode] = judge.judge(pairs)
        seconds[mode] = round(time.monotonic() - started, 1)
    engine.shutdown()

    def label_of(pair):
        return {"1": "A", "2": "B"}.get(str(pair["label"]), pair["label"])

    both_read = [(lp, gen, label_of(p)) for lp, gen, p in zip(rows["logprob"], rows["generate"], pairs)
                 if lp["winner"] != "error" and gen["winner"] != "error"]
    orders = [(lp[f"{o}_verdict"], gen[f"{o}_verdict"]) for lp, gen, _ in both_read for o in ("ab", "ba")]
    result = {
        "judge": args.judge, "pairs": len(pairs), "seconds": seconds,
        "generate_errors": Counter(r["error"].split(":")[1].strip() if ":" in (r["error"] or "") else r["error"]
                                   for r in rows["generate"] if r["winner"] == "error").most_common(5),
        "pairs_read_in_both_modes": len(both_read),
        "winner_agreement": round(sum(lp["winner"] == gen["winner"] for lp, gen, _ in both_read)
                                  / max(len(both_read), 1), 3),
        "order_verdict_agreement": round(sum(a == b for a, b in orders) / max(len(orders), 1), 3),
        "agreement_with_labels": {
            mode: round(sum(r["winner"] == label_of(p) for r, p in zip(rows[mode], pairs))
                        / max(sum(label_of(p) in ("A", "B") for p in pairs), 1), 3)
            for mode in rows},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
