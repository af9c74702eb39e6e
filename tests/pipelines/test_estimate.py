"""`magistrate estimate`: row counts, token counts on a sample scaled to the input, and the
roofline arithmetic, checked against counts and configs computed here independently."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from magistrate.pipelines.estimate import GPUS, PREFILL_MFU, count_rows, gpu_hours, parameter_count
from tests.conftest import EXAMPLES, invoke_cli


def _demo() -> list[dict]:
    with open(EXAMPLES / "llmbar-demo.jsonl") as f:
        return [json.loads(line) for line in f]


def test_count_rows_in_every_format(tmp_path):
    rows = [{"id": str(i), "prompt": f"q{i}\nwith a newline", "response_a": "a", "response_b": "b"}
            for i in range(7)]
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "x.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:4]) + "\n\n")
    (tmp_path / "j" / "y.jsonl").write_text("\n".join(json.dumps(r) for r in rows[4:]))  # no final newline
    assert count_rows(str(tmp_path / "j")) == 7
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet", row_group_size=3)
    assert count_rows(str(tmp_path / "p.parquet")) == 7
    pacsv.write_csv(pa.Table.from_pylist(rows), tmp_path / "c.csv")  # quoted newlines inside fields
    assert count_rows(str(tmp_path / "c.csv")) == 7


def test_parameter_count_matches_published_sizes():
    llama70 = SimpleNamespace(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
                              num_key_value_heads=8, intermediate_size=28672, vocab_size=128256)
    qwen7 = SimpleNamespace(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                            num_key_value_heads=4, intermediate_size=18944, vocab_size=152064)
    assert parameter_count(llama70) / 70.55e9 == pytest.approx(1, abs=0.01)
    assert parameter_count(qwen7) / 7.62e9 == pytest.approx(1, abs=0.01)


def test_roofline_arithmetic():
    peak, bandwidth, _ = GPUS["a100"]
    hours = gpu_hours(10**9, 10**6, 0, "a100")
    assert hours["gpu_hours"] == pytest.approx(2 * 10**9 * 10**6 / (peak * PREFILL_MFU) / 3600)
    assert gpu_hours(10**9, 0, 6400, "a100")["decode_gpu_hours"] == pytest.approx(
        6400 * 10**9 * 2 / bandwidth / 64 / 3600)
    with pytest.raises(ValueError, match="unknown GPU"):
        gpu_hours(1, 1, 1, "tpu")


def _tokens_by_hand(pairs: list[dict], model: str) -> list[int]:
    """Each pair's prompt tokens over both orders, from the chat template directly."""
    from transformers import AutoTokenizer

    from magistrate.judges.registry import get_judge
    from magistrate.judges.render import final_prompt, render_messages

    tok = AutoTokenizer.from_pretrained(model)
    profile = get_judge("mt-bench")
    return [sum(len(tok(final_prompt(profile, render_messages(profile, p["prompt"], p["response_a"],
                                                               p["response_b"], o), tok, "logprob"),
                        add_special_tokens=False)["input_ids"]) for o in ("ab", "ba"))
            for p in pairs]


def test_estimate_counts_a_sample_and_scales_it(embedded_model):
    pairs = _demo()
    by_hand = _tokens_by_hand(pairs, embedded_model)
    whole = invoke_cli("estimate", str(EXAMPLES / "llmbar-demo.jsonl"), "--sample", "0", "--json")
    assert whole.returncode == 0, whole.stderr
    result = json.loads(whole.stdout)
    assert result["rows"] == result["sampled"] == len(pairs)
    assert result["prompt_tokens"] == sum(by_hand)
    assert result["completion_tokens"] == 0 and result["mode"] == "logprob"

    sampled = json.loads(invoke_cli("estimate", str(EXAMPLES / "llmbar-demo.jsonl"), "--sample", "5",
                                 "--json", "--gpu", "a100").stdout)
    assert sampled["sampled"] == 5
    assert sampled["prompt_tokens"] == round(sum(by_hand[:5]) * len(pairs) / 5)
    assert sampled["gpu"] == "a100"


def test_estimate_generate_mode_and_price(embedded_model):
    result = invoke_cli("estimate", str(EXAMPLES / "llmbar-demo.jsonl"), "--sample", "4", "--mode", "generate",
                     "--completion-tokens", "100", "--price", "2.5")
    assert result.returncode == 0, result.stderr
    assert "4,000 generated" in result.stdout  # 20 pairs x 2 orders x 100 tokens
    assert "at $2.5/GPU-hour" in result.stdout


def test_estimate_bad_gpu_is_one_line(embedded_model):
    result = invoke_cli("estimate", str(EXAMPLES / "llmbar-demo.jsonl"), "--gpu", "tpu9", "--sample", "2")
    assert result.returncode == 2
    assert result.stderr.startswith("magistrate: error: unknown GPU") and "Traceback" not in result.stderr


def test_estimate_with_a_stated_size(embedded_model):
    """--params stands in for a config that cannot be read here (a 70B judge from the hub)."""
    result = json.loads(invoke_cli("estimate", str(EXAMPLES / "llmbar-demo.jsonl"), "--sample", "0", "--json",
                                "--params", "70.55").stdout)
    assert result["parameters"] == 70_550_000_000
    peak = 989e12 * 0.4  # the h100 default at the stated prefill efficiency
    assert result["gpu_hours"] == pytest.approx(2 * 70.55e9 * result["prompt_tokens"] / peak / 3600)


def test_a_cascade_costs_stage_one_on_every_pair_and_stage_two_on_the_escalated(tmp_path, embedded_model):
    """`estimate --cascade`: each stage's own estimate (its judge, mode, orders, size),
    stage 2 charged for the escalation rate's share of the pairs; beside it the last stage alone."""
    config = tmp_path / "cascade.yaml"
    config.write_text("stages:\n"
                      "  - {name: small, mode: logprob, order: ab, calibration: c.json, params_billions: 7}\n"
                      "  - {name: big, mode: logprob, order: both, params_billions: 70}\n")
    src = str(EXAMPLES / "llmbar-demo.jsonl")
    result = invoke_cli("estimate", src, "--cascade", str(config), "--escalation-rate", "0.25", "--sample", "0",
                     "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    alone = {}
    for name, params, order in (("small", 7, "ab"), ("big", 70, "both")):
        one = invoke_cli("estimate", src, "--mode", "logprob", "--order", order, "--params", str(params),
                      "--sample", "0", "--json")
        alone[name] = json.loads(one.stdout)["gpu_hours"]
    small, big = got["stages"]
    assert small["pairs"] == 20 and big["pairs"] == 5 and big["share_of_pairs"] == 0.25
    assert small["gpu_hours"] == pytest.approx(alone["small"]) and big["gpu_hours"] == pytest.approx(0.25 * alone["big"])
    assert got["gpu_hours"] == pytest.approx(alone["small"] + 0.25 * alone["big"])
    assert got["last_stage_alone_gpu_hours"] == pytest.approx(alone["big"])
    assert got["saving"] == pytest.approx(1 - got["gpu_hours"] / alone["big"])
    text = invoke_cli("estimate", src, "--cascade", str(config), "--escalation-rate", "0.25", "--sample", "0")
    assert "the last stage alone on every pair" in text.stdout
    for bad in (["--escalation-rate", "1.5"], [], ["--escalation-rate", "x"]):
        refused = invoke_cli("estimate", src, "--cascade", str(config), *bad)
        assert refused.returncode == 2 and "escalation" in refused.stderr and "Traceback" not in refused.stderr
