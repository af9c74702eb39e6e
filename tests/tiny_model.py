"""A tiny random-weight judge for tests of mechanics (sharding, resume, faults, plumbing).

The embedded judge's own architecture and tokenizer, its config shrunk to two layers of
width 128 (two heads of 64: a head size vLLM's CPU attention takes), random weights from
a fixed seed. It goes through exactly the code path the real judge does (vLLM, chat
template, label tokens), many times faster; its verdicts mean nothing, so tests where
the model's output matters use the real 135M judge. Built once and cached beside it."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

SHAPE = {"num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 256,
         "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64}
_DONE = ".tiny-complete"


def tiny_model(embedded: Path) -> Path:
    digest = hashlib.sha256(json.dumps(SHAPE, sort_keys=True).encode()).hexdigest()[:10]
    target = embedded.parent / f"tiny-random-{embedded.name}-{digest}"
    if (target / _DONE).exists():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(embedded)
    for key, value in SHAPE.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=embedded.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        AutoTokenizer.from_pretrained(embedded).save_pretrained(staging)
        (staging / _DONE).write_text(f"random weights, the shape of {embedded.name}: {SHAPE}\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
