"""The peer: Ray Data LLM (`ray.data.llm.build_processor` with a vLLM engine config) on the
judge's own rendered prompts and the same engine settings as magistrate's. Prints one JSON
object: wall seconds for the pairs (engine start included, as for `magistrate judge`).

    .venv/bin/python -m benchmarks.ray_data_llm --pairs 64
"""

from __future__ import annotations

import argparse
import json
import os
import time

from benchmarks.common import llmbar_pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128, help="prompts per batch (64 pairs, 2 orders)")
    parser.add_argument("--mode", choices=("logprob", "generate"), default="logprob",
                        help="generate: the judge's greedy sampling, token cap and stop strings")
    args = parser.parse_args()

    import ray
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig
    from transformers import AutoTokenizer

    from magistrate.actors.engine import EngineSettings, TokenizerEngine, engine_kwargs
    from magistrate.judges.core import Judge, JudgeSettings
    from magistrate.judges.registry import get_judge
    from magistrate.judges.render import final_prompt, label_token_ids, orders_for, render_messages
    from magistrate.model_files import resolve_model

    # Before build_processor, which would start one itself. Four logical CPUs on two cores:
    # the tokenizer and engine actors hold one each, and Ray Data's _preprocess and
    # _postprocess tasks need one more; with two they wait on each other for ever (seen
    # here, "3/2 CPU ... backpressured"). magistrate's own job needs one per actor only.
    # A Ray of its own: a killed `ray start` leaves its address behind, and ray.init()
    # would try to join that cluster (and refuse num_cpus).
    ray.init(address="local", num_cpus=4, logging_level="WARNING")
    model = resolve_model(None)
    profile = get_judge("mt-bench")
    tokenizer = AutoTokenizer.from_pretrained(model)
    candidates = list(dict.fromkeys(label_token_ids(profile, tokenizer).values()))
    prompts = [
        {"prompt": final_prompt(profile, render_messages(profile, p["prompt"], p["response_a"], p["response_b"], o),
                                tokenizer, args.mode)}
        for p in llmbar_pairs(args.pairs + 4)[4:] for o in orders_for("both", p["id"])
    ]
    kwargs = engine_kwargs(EngineSettings(model=model))
    kwargs.pop("model")
    config = vLLMEngineProcessorConfig(
        model_source=model, engine_kwargs=kwargs, batch_size=args.batch_size, concurrency=1,
        chat_template_stage=False, tokenize_stage=True, detokenize_stage=False,
        # No GPU here: the engine's actor asks for one CPU instead of Ray Data LLM's GPU bundle.
        placement_group_config={"bundles": [{"CPU": 1}]},
        # The same CPU threading magistrate's engine gets (actors/engine.py:cpu_engine_env):
        # Ray would set OMP_NUM_THREADS=1 for a one-CPU actor, which halves the engine here.
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(len(os.sched_getaffinity(0))),
                                  "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                                  "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}},
    )
    if args.mode == "logprob":
        sampling = {"max_tokens": 1, "temperature": 0.0, "logprob_token_ids": candidates, "detokenize": False}
    else:
        # The judge's own sampling, the label tokens' log-probabilities at each step included
        # (magistrate reads p_a from them; benchmarks/bare_engine.py does the same).
        form_ids = Judge(TokenizerEngine(EngineSettings(model=model)), JudgeSettings(mode="generate")).form_ids
        sampling = {"max_tokens": profile.max_new_tokens, "temperature": 0.0, "stop": list(profile.stop),
                    "include_stop_str_in_output": True, "logprob_token_ids": form_ids, "flat_logprobs": True}
    processor = build_processor(
        config,
        preprocess=lambda row: {"prompt": row["prompt"], "sampling_params": sampling},
        postprocess=lambda row: {"n": 1},
    )
    started = time.monotonic()
    rows = processor(ray.data.from_items(prompts)).take_all()
    seconds = time.monotonic() - started
    print(json.dumps({"mode": args.mode, "pairs": args.pairs, "prompts": len(rows), "wall_s": round(seconds, 2),
                      "pairs_per_s_wall": round(args.pairs / seconds, 3)}))


if __name__ == "__main__":
    main()
