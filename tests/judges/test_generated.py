"""Generate mode's p_first from the verdict label's log-probabilities (judges/generated.py):
the step that wrote the label the reader took, found in hand-made token lists, and the
judging core's fallback to 1 / ½ / 0 where it cannot be found."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from magistrate.judges import Judge, JudgeSettings, Reading, get_judge
from magistrate.judges.generated import Generation, label_forms, p_first_at_verdict
from tests.judges.test_injection import PAIR, FakeEngineDouble

# A toy vocabulary: token id -> text. Decoding joins the texts.
VOCAB = ["Final", " verdict", ":", " [[", "A", "]]", "B", " A", " B", "[[A", "].", "]", " is", " fine", "C", "\n"]
ID = {text: i for i, text in enumerate(VOCAB)}
FORMS = ({"A": ID["A"], "B": ID["B"], "tie": ID["C"]}, {"A": ID[" A"], "B": ID[" B"]})
LABELS = {"A": "A", "B": "B", "tie": "C"}


def decode(ids):
    return "".join(VOCAB[i] for i in ids)


def generation(tokens: list[str], logprobs: dict[int, dict[str, float]], text: str | None = None) -> Generation:
    """Tokens by text; log-probabilities by step and label token text (probabilities given)."""
    ids = [ID[t] for t in tokens]
    steps = {step: {ID[t]: math.log(p) for t, p in probs.items()} for step, probs in logprobs.items()}
    return Generation(decode(ids) if text is None else text, len(ids), ids, steps)


def p_first(gen: Generation, verdict: str, label_at: int | None = None) -> float | None:
    at = gen.text.rindex(LABELS[verdict]) if label_at is None else label_at
    return p_first_at_verdict(gen, at, verdict, LABELS, FORMS, decode)


def test_the_step_that_wrote_the_marker_gives_p_renormalised_over_the_labels():
    gen = generation(["Final", " verdict", ":", " [[", "A", "]]"], {4: {"A": 0.6, "B": 0.2, "C": 0.1}})
    assert p_first(gen, "A") == pytest.approx((0.6 + 0.05) / 0.9)  # a tie counts half


def test_an_earlier_label_token_in_the_rationale_is_not_the_verdict():
    # " A is fine: [[A]]": the " A" at step 0 and the "A" at step 5 are both label tokens.
    gen = generation([" A", " is", " fine", ":", " [[", "A", "]]"],
                     {0: {" A": 0.9, " B": 0.1}, 5: {"A": 0.55, "B": 0.45, "C": 0.0001}})
    assert p_first(gen, "A") == pytest.approx((0.55 + 0.00005) / 1.0001)
    assert p_first(gen, "A", label_at=1) == pytest.approx(0.9)  # a reader that took the first one


def test_a_label_written_after_a_space_reads_the_spaced_form():
    gen = generation(["Final", " verdict", ":", " B"], {3: {" A": 0.25, " B": 0.5}})
    assert p_first(gen, "B") == pytest.approx(1 / 3)


def test_the_marker_cut_inside_a_token_by_a_stop_string_still_counts():
    # Generation stopped at "[[B]]" inside the token "].": the text ends there, the ids do not.
    gen = generation([" [[", "B", "]", "]."], {1: {"A": 0.1, "B": 0.3, "C": 1e-9}}, text=" [[B]]")
    assert p_first(gen, "B") == pytest.approx(0.25)


@pytest.mark.parametrize("case", ["merged", "no position", "not the label", "no logprobs", "a label missing"])
def test_where_the_step_cannot_be_found_there_is_no_probability(case):
    gen = generation([" [[", "A", "]]"], {1: {"A": 0.7, "B": 0.3, "C": 0.1}})
    if case == "merged":  # the verdict's "A" is inside the token "[[A": no step wrote it alone
        assert p_first(generation([" A", " is", " fine", ":", "[[A", "]]"], {0: {" A": 0.9, " B": 0.1}}), "A") is None
    elif case == "no position":
        assert p_first_at_verdict(gen, None, "A", LABELS, FORMS, decode) is None
    elif case == "not the label":
        assert p_first(gen, "A", label_at=0) is None
    elif case == "no logprobs":
        assert p_first(gen._replace(label_logprobs={}), "A") is None
    else:
        assert p_first(gen._replace(label_logprobs={1: {ID["A"]: -0.1}}), "A") is None


def test_forms_are_the_single_token_spellings_of_every_label(embedded_tokenizer):
    mt_bench = label_forms(get_judge("mt-bench"), embedded_tokenizer)
    encode = lambda s: embedded_tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    assert [sorted(f) for f in mt_bench] == [["A", "B"], ["A", "B"]]
    assert [f["A"] for f in mt_bench] == [*encode("A"), *encode(" A")]
    # SmolLM2 writes " 1" as two tokens: Con-J's labels have the bare form only.
    assert label_forms(get_judge("con-j"), embedded_tokenizer) == ({"A": encode("1")[0], "B": encode("2")[0]},)


class LabelLogprobsEngineDouble(FakeEngineDouble):
    """The fake engine (a test double) answering as the vLLM engine does in generate mode:
    the token ids of its fixed text and, at each step that wrote a label token, the label
    tokens' log-probabilities (`probs`: label token id -> probability, every such step)."""

    def __init__(self, tokenizer, text, probs):
        super().__init__(tokenizer, text=text)
        self.probs = probs

    def generate(self, prompts, max_tokens, stop=(), label_ids=()):
        super().generate(prompts, max_tokens, stop, label_ids)
        ids = self.tokenizer.encode(self.text, add_special_tokens=False)
        steps = {i: {t: math.log(self.probs[t]) for t in label_ids} for i, t in enumerate(ids) if t in label_ids}
        return [Generation(self.text, len(ids), ids, steps) for _ in prompts]


def test_the_core_reads_p_a_at_the_verdict_and_keeps_the_winner(embedded_tokenizer):
    judge = Judge(FakeEngineDouble(embedded_tokenizer), JudgeSettings(judge="mt-bench", mode="generate"))
    [bare, spaced] = judge.label_forms
    probs = {bare["A"]: 0.6, bare["B"]: 0.2, spaced["A"]: 0.01, spaced["B"]: 0.3}
    engine = LabelLogprobsEngineDouble(embedded_tokenizer, "B looks fine, but A is right.\n[[A]]", probs)
    [row] = Judge(engine, JudgeSettings(judge="mt-bench", mode="generate", order="both")).judge([PAIR])
    assert sorted(engine.label_ids) == sorted({*bare.values(), *spaced.values()})
    # "[[A]]" in both orders: ab says A at 0.75, ba says the original B at 0.75.
    assert (row["ab_verdict"], row["ba_verdict"], row["winner"]) == ("A", "B", "tie")
    assert row["ab_p_a"] == pytest.approx(0.75) and row["ba_p_a"] == pytest.approx(0.25)
    assert row["p_a"] == pytest.approx(0.5)
    assert row["ab_p_source"] == row["ba_p_source"] == "logprobs"
    assert row["ab_label_mass"] is None  # a logprob-mode figure


def test_without_label_logprobs_p_a_comes_from_the_verdict_and_says_so(embedded_tokenizer):
    # The plain double returns (text, tokens) only, like an engine that gives no logprobs.
    engine = FakeEngineDouble(embedded_tokenizer, text="It is A.\n[[A]]")
    [row] = Judge(engine, JudgeSettings(judge="mt-bench", mode="generate", order="ab")).judge([PAIR])
    assert row["ab_p_a"] == 1.0 and row["ab_p_source"] == "verdict"
    # A profile whose reader gives no position: the verdict again, whatever the engine returns.
    forms = Judge(engine, JudgeSettings(judge="mt-bench", mode="generate")).label_forms
    engine = LabelLogprobsEngineDouble(embedded_tokenizer, "[[A]]", {t: 0.5 for f in forms for t in f.values()})
    positionless = replace(get_judge("mt-bench"), name="no-position", read=lambda text: Reading("A"))
    [row] = Judge(engine, JudgeSettings(mode="generate", order="ab", profile=positionless)).judge([PAIR])
    assert row["ab_p_a"] == 1.0 and row["ab_p_source"] == "verdict"
    [row] = Judge(engine, JudgeSettings(judge="mt-bench", mode="generate", order="ab")).judge([PAIR])
    assert row["ab_p_a"] == 0.5 and row["ab_p_source"] == "logprobs"


def test_logprob_mode_says_its_p_comes_from_logprobs(embedded_tokenizer):
    judge = Judge(FakeEngineDouble(embedded_tokenizer), JudgeSettings(judge="mt-bench", mode="logprob", order="ab"))
    engine = FakeEngineDouble(embedded_tokenizer, logprobs={t: -0.7 for t in judge.label_ids.values()})
    [row] = Judge(engine, JudgeSettings(judge="mt-bench", mode="logprob", order="ab")).judge([PAIR])
    assert row["ab_p_source"] == "logprobs" and row["ba_p_source"] is None


class AsyncEngineDouble(FakeEngineDouble):
    """The fake engine (a test double) with the async engine's coroutine methods."""

    async def generate(self, prompts, max_tokens, stop=(), label_ids=()):
        return super().generate(prompts, max_tokens, stop, label_ids)

    async def next_token_logprobs(self, prompts, candidates):
        return super().next_token_logprobs(prompts, candidates)


@pytest.mark.parametrize("mode", ["generate", "logprob"])
def test_a_warm_up_is_one_short_request_whatever_the_judges_cap(embedded_tokenizer, mode):
    import asyncio

    engine = AsyncEngineDouble(embedded_tokenizer)
    judge = Judge(engine, JudgeSettings(judge="mt-bench", mode=mode, order="both"))
    asyncio.run(judge.warm_up_async(PAIR))
    [(kind, prompts, asked)] = engine.calls
    assert len(prompts) == 1  # one order: the engine's one-off costs, not a verdict
    assert prompts[0] == judge.render(PAIR, "ab")[1]
    if mode == "generate":
        assert kind == "generate" and asked == 8 < judge.max_new_tokens
    else:
        assert kind == "next_token_logprobs" and sorted(asked) == sorted(set(judge.label_ids.values()))
