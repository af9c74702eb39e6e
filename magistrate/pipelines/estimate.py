"""GPU-hours from token counts: a prefill/decode roofline, with its assumptions stated.

- Prefill is compute-bound: 2 x parameters FLOPs per prompt token, at `PREFILL_MFU` of
  the GPU's dense bf16 peak.
- Decode is memory-bound: each decoding step reads the weights once for the whole batch;
  with `DECODE_BATCH` sequences in flight a generated token costs
  weight_bytes / bandwidth / DECODE_BATCH seconds (KV-cache reads ignored).
- logprob mode generates nothing (one forward pass per order).
These are planning figures, good to a factor of about 2; measure a slice before a big job.
"""

from __future__ import annotations

from collections import Counter

from magistrate.actors.engine import EngineSettings, TokenizerEngine
from magistrate.judges.core import Judge, JudgeSettings
from magistrate.model_files import load_config, resolve_model
from magistrate.pairs import MAX_FIELD_CHARS, judge_prompt
from magistrate.pipelines.prepare import read_prepared
from magistrate.pipelines.sharding import shard
from magistrate.pipelines.units import UNIT_ROWS
from magistrate.pipelines.sources import list_input_files, locate
from magistrate.pipelines.summary import error_cause

GPUS = {  # dense bf16 peak FLOP/s, memory bandwidth B/s, memory bytes
    "h100": (989e12, 3.35e12, 80e9),
    "h200": (989e12, 4.8e12, 141e9),
    "a100": (312e12, 2.0e12, 80e9),
    "l40s": (362e12, 0.864e12, 48e9),
    "l4": (121e12, 0.3e12, 24e9),
    "a10g": (125e12, 0.6e12, 24e9),
}
PREFILL_MFU = 0.4
DECODE_BATCH = 64
BYTES_PER_PARAM = 2  # bf16 weights


def parameter_count(config) -> int:
    """Parameters of a decoder-only transformer from its Hugging Face config."""
    h = config.hidden_size
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    inter = getattr(config, "intermediate_size", None) or 4 * h
    attention = 2 * h * heads * head_dim + 2 * h * kv_heads * head_dim
    mlp = 3 * h * inter
    embeddings = config.vocab_size * h * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return layers * (attention + mlp + 2 * h) + embeddings


def gpu_hours(params: int, prompt_tokens: int, completion_tokens: int, gpu: str) -> dict:
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    peak, bandwidth, _ = GPUS[gpu]
    prefill_s = 2 * params * prompt_tokens / (peak * PREFILL_MFU)
    decode_s = completion_tokens * params * BYTES_PER_PARAM / bandwidth / DECODE_BATCH
    return {
        "gpu": gpu,
        "parameters": params,
        "prefill_gpu_hours": prefill_s / 3600,
        "decode_gpu_hours": decode_s / 3600,
        "gpu_hours": (prefill_s + decode_s) / 3600,
        "assumptions": f"prefill at {PREFILL_MFU:.0%} of bf16 peak; decode memory-bound, "
                       f"{DECODE_BATCH} sequences per step",
    }


def count_rows(uri: str, endpoint_url: str | None = None) -> int:
    """Pairs in an input, as `judge` cuts it into units (a JSONL file's non-blank lines), streamed."""
    import tempfile

    loc = locate(uri, endpoint_url)
    with tempfile.TemporaryDirectory(prefix="magistrate-staged-") as tmp:
        return sum(u.rows for u in shard(loc, list_input_files(loc), UNIT_ROWS, locate(tmp)))


def estimate_input(uri: str, judge: str, model: str, gpu: str, fmt: str = "auto",
                   columns: str | None = None, endpoint_url: str | None = None,
                   mode: str | None = None, order: str = "both", sample: int = 2000,
                   completion_tokens: int | None = None, params_billions: float | None = None,
                   max_chars: int = MAX_FIELD_CHARS) -> dict:
    """GPU-hours for judging a whole input, from the exact token counts of its first
    `sample` pairs (every pair with sample=0) scaled to its row count."""
    rows = count_rows(uri, endpoint_url)
    engine = TokenizerEngine(EngineSettings(model=model))
    core = Judge(engine, JudgeSettings(judge=judge, mode=mode, order=order))
    pairs = [dict(r, prompt=judge_prompt(r))
             for r in read_prepared(uri, fmt, columns, endpoint_url, sample or None, max_chars)]
    counted = core.count_tokens(pairs)
    orders = [o for o in ("ab", "ba") if any(r[f"{o}_prompt_tokens"] for r in counted)]
    prompt_tokens = sum(r[f"{o}_prompt_tokens"] or 0 for r in counted for o in orders)
    judged = sum(1 for r in counted if r["winner"] != "error")
    per_order_out = 0 if core.mode == "logprob" else (completion_tokens or core.max_new_tokens)
    scale = rows / max(len(counted), 1)
    total_prompt = round(prompt_tokens * scale)
    total_completion = round(judged * len(orders) * per_order_out * scale)
    params = round(params_billions * 1e9) if params_billions else parameter_count(load_config(model))
    result = gpu_hours(params, total_prompt, total_completion, gpu)
    result.update(
        rows=rows, sampled=len(counted), judge=core.profile.name, mode=core.mode, order=order,
        model=model, prompt_tokens=total_prompt, completion_tokens=total_completion,
        prompt_tokens_per_pair=round(prompt_tokens / max(len(counted), 1), 1),
        error_rows_in_sample=len(counted) - judged,
        error_causes=dict(Counter(error_cause(r["error"]) for r in counted if r["winner"] == "error").most_common(50)),
        error_rows=[{"id": p["id"], "error": r["error"]} for p, r in zip(pairs, counted)
                    if r["winner"] == "error"][:1000],
        completion_assumption=("logprob: no generated tokens" if core.mode == "logprob" else
                               f"generate: {per_order_out} tokens per order, "
                               + ("as given" if completion_tokens else "the profile's maximum: an upper bound")),
    )
    return result


def estimate_cascade(uri: str, stages: list, escalation_rates: list[float], gpu: str, **options) -> dict:
    """GPU-hours of a cascade (pipelines/cascade.py): stage 1 on every pair, stage k on the
    share the stages before it escalate (`escalation_rates`, one per stage but the last, as
    measured on a slice: summary.json's `stages[k].escalated / stages[k].pairs`), each from
    its own token counts; beside it, the last stage alone on every pair. `options` as
    estimate_input's (fmt, columns, endpoint_url, sample, max_chars)."""
    if len(escalation_rates) != len(stages) - 1 or not all(0 <= r <= 1 for r in escalation_rates):
        raise ValueError(f"give {len(stages) - 1} escalation rate(s) between 0 and 1, one per stage but the "
                         f"last (got {', '.join(map(str, escalation_rates)) or 'none'})")
    share, rows, total = 1.0, [], 0.0
    for k, stage in enumerate(stages):
        one = estimate_input(uri, stage.judge, resolve_model(stage.model), gpu, mode=stage.mode, order=stage.order,
                             completion_tokens=stage.max_new_tokens, params_billions=stage.params_billions, **options)
        rows.append({"name": stage.name, "judge": one["judge"], "mode": one["mode"], "order": one["order"],
                     "parameters": one["parameters"], "share_of_pairs": share, "pairs": round(one["rows"] * share),
                     "gpu_hours": one["gpu_hours"] * share, "gpu_hours_on_every_pair": one["gpu_hours"]})
        total += one["gpu_hours"] * share
        if k < len(escalation_rates):
            share *= escalation_rates[k]
    alone = rows[-1]["gpu_hours_on_every_pair"]
    return {"gpu": gpu, "rows": one["rows"], "stages": rows, "gpu_hours": total,
            "last_stage_alone_gpu_hours": alone, "saving": 1 - total / alone if alone else None,
            "assumptions": one["assumptions"] + "; the escalation rates of the slice hold for the whole input"}
