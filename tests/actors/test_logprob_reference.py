"""Logprob mode against an independent reference: a plain transformers forward pass of
the same model on the same rendered prompt gives the same p_a (float32)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from magistrate.judges import FormatTemplate, Reading
from magistrate.judges.core import Judge, JudgeSettings
from magistrate.judges.mt_bench import PROFILE as MT_BENCH
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.engine


def _pairs(n: int) -> list[dict]:
    with open(EXAMPLES / "llmbar-demo.jsonl") as f:
        rows = [json.loads(line) for line in f]
    # Short ones keep the reference forward pass quick.
    return sorted(rows, key=lambda r: len(r["prompt"] + r["response_a"] + r["response_b"]))[:n]


@pytest.fixture(scope="module")
def reference_model(embedded_model):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(embedded_model, dtype=torch.float32)
    model.eval()
    return model


def _reference_p_first(model, tokens: list[int], label_ids: dict[str, int]) -> float:
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0, -1].double()
    probs = torch.softmax(logits, dim=-1)
    a, b = probs[label_ids["A"]].item(), probs[label_ids["B"]].item()
    return a / (a + b)


@pytest.mark.parametrize("judge_name", ["mt-bench", "skywork-critic"])
def test_logprob_p_a_matches_transformers(engine, reference_model, judge_name):
    judge = Judge(engine, JudgeSettings(judge=judge_name, mode="logprob", order="both"))
    pairs = _pairs(3)
    rows = judge.judge(pairs)
    for pair, row in zip(pairs, rows):
        assert row["error"] is None, row["error"]
        for order in ("ab", "ba"):
            _, tokens = judge.render(pair, order)
            p_first = _reference_p_first(reference_model, tokens, judge.label_ids)
            expected = p_first if order == "ab" else 1.0 - p_first
            assert row[f"{order}_p_a"] == pytest.approx(expected, abs=0.02), (pair["id"], order)
        assert row["p_a"] == pytest.approx((row["ab_p_a"] + row["ba_p_a"]) / 2)
        assert row["winner"] in {"A", "B", "tie"}


def _leading_letter(text: str) -> Reading:
    letter = text.strip()[:1]
    return Reading(letter if letter in ("A", "B") else None)


# The 135M judge writes no [[A]]/[[B]] after mt-bench's long prompt, in 48 tokens or 256
# (measured on the demo pairs: every row an error). Asked for a bare letter, it starts
# its answer with one, which this profile reads: so both branches below run.
LETTER = replace(MT_BENCH, name="leading-letter", system="You are a judge. Answer with A if answer A is "
                 "better, B if answer B is better.",
                 user_template=FormatTemplate("Question: {question}\nAnswer A: {answer_a}\nAnswer B: {answer_b}\n"
                                              "Verdict:"),
                 read=_leading_letter, stop=("\n",))


def test_generate_mode_reads_or_reports(engine):
    """Generate mode through the real engine: every order either yields a verdict read
    from the text, or an error row that keeps the raw text; never a silent guess. Both
    outcomes happen here, and each is checked."""
    seen = []
    for settings in (dict(judge="mt-bench"), dict(profile=LETTER)):
        judge = Judge(engine, JudgeSettings(mode="generate", order="ab", max_new_tokens=48, **settings))
        for row in judge.judge(_pairs(2)):
            assert row["ab_raw"] is not None and row["ab_completion_tokens"] > 0
            if row["winner"] == "error":
                seen.append("error")
                assert row["ab_error"] and row["p_a"] is None
            else:
                seen.append("verdict")
                assert row["ab_verdict"] in {"A", "B"} and row["ab_raw"].strip().startswith(row["ab_verdict"])
                if row["ab_p_source"] == "logprobs":  # read at the verdict's token: its side gets >= 1/2
                    assert (row["p_a"] >= 0.5) == (row["ab_verdict"] == "A"), row["p_a"]
                else:
                    assert row["ab_p_source"] == "verdict" and row["p_a"] in (0.0, 1.0)
    assert set(seen) == {"error", "verdict"}, seen  # the branch each profile is here for ran


def test_generation_stops_at_a_stop_string_and_keeps_it(engine):
    """The real engine honours a profile's stop strings: the text ends with the first one
    met, kept, and fewer tokens are spent than the cap. (". " comes early in any prose.)"""
    text = engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write three sentences about the sea."}], add_generation_prompt=True,
        tokenize=False)
    prompt = engine.tokenizer.encode(text, add_special_tokens=False)
    [(free, n_free, *_)] = engine.generate([prompt], 64)
    [(stopped, n_stopped, *_)] = engine.generate([prompt], 64, stop=(". ",))
    assert ". " in free[:-2], free  # the free text goes past a sentence end
    assert stopped.endswith(". ") and stopped.count(". ") == 1, stopped
    assert free.startswith(stopped) and n_stopped < n_free
