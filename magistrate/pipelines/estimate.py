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
