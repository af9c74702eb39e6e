"""The prompt string the engine gets, with the embedded judge's real tokenizer.

The fixture files in fixtures/ were computed once with `final_prompt(..., "logprob")` and
then reviewed by eye (`cat -A`), checking:
- final_prompt_mt_bench_logprob.txt is SmolLM2's ChatML template around the two
  messages: "<|im_start|>system\\n" + reward-bench's prompt_v2 + "<|im_end|>\\n",
  "<|im_start|>user\\n" + the filled MTBENCH_V2 template (ending "[The End of Assistant
  B's Answer]") + "<|im_end|>\\n", then "<|im_start|>assistant\\n[[" with nothing after
  "[[" (no newline).
- final_prompt_skywork_critic_logprob.txt has no system message of ours, so SmolLM2's
  template inserts its default one ("<|im_start|>system\\nYou are a helpful AI assistant
  named SmolLM, trained by Hugging Face<|im_end|>\\n"); then the user turn holds the
  Skywork card prompt with the trailing spaces after "better. " and "possible. " and its
  final "\\n" right before "<|im_end|>"; it ends "<|im_start|>assistant\\n[[".
- final_prompt_con_j_generate.txt (generate mode, added 2026-11-26): an explicit empty
  system turn ("<|im_start|>system\n<|im_end|>\n", as the Con-J README sends
  system_prompt=""), then the user turn with reward-bench's CON_J_PROMPT filled in: the
  Chinese instruction, the line of four spaces, "问题：" + the question, "回答1：" + A,
  "回答2：" + B, no newline before "<|im_end|>"; it ends "<|im_start|>assistant\n".
- final_prompt_mt_bench_tie_generate.txt (generate mode, added 2026-11-26): FastChat's
  pair-v2 system prompt (its last sentence offers "[[C]]" for a tie), the same MT-Bench
  user turn as mt-bench, and it ends "<|im_start|>assistant\n" with no verdict prefix.
The tests below also re-check these structural facts, so a regenerated fixture that
lost them would fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from magistrate.judges import FormatTemplate, JudgeProfile, get_judge, render_messages
from magistrate.judges.render import final_prompt, label_token_ids
from magistrate.judges.verdicts import bracket_reader

FIXTURES = Path(__file__).parent / "fixtures"

QUESTION = "Which is heavier, a kilo of iron or a kilo of feathers?"
RESPONSE_A = "They weigh the same: one kilogram each."
RESPONSE_B = "Iron is heavier."


def _fixture(name: str) -> str:
    with open(FIXTURES / name, encoding="utf-8", newline="") as f:
        return f.read()


@pytest.mark.parametrize(
    "judge, mode, fixture",
    [("mt-bench", "logprob", "final_prompt_mt_bench_logprob.txt"),
     ("skywork-critic", "logprob", "final_prompt_skywork_critic_logprob.txt"),
     ("con-j", "generate", "final_prompt_con_j_generate.txt"),
     ("mt-bench-tie", "generate", "final_prompt_mt_bench_tie_generate.txt")],
)
def test_final_prompt_equals_reviewed_fixture(embedded_tokenizer, judge, mode, fixture):
    profile = get_judge(judge)
    messages = render_messages(profile, QUESTION, RESPONSE_A, RESPONSE_B)
    text = final_prompt(profile, messages, embedded_tokenizer, mode)
    assert text == _fixture(fixture)
    # Logprob mode ends where the verdict token comes; in generate mode the judge writes
    # from the start of its turn.
    assert text.endswith("<|im_start|>assistant\n" + ("[[" if mode == "logprob" else ""))
    # Each message appears wrapped in ChatML turns, in order.
    for message in messages:
        assert f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n" in text


def test_skywork_prompt_gets_the_template_default_system(embedded_tokenizer):
    profile = get_judge("skywork-critic")
    messages = render_messages(profile, QUESTION, RESPONSE_A, RESPONSE_B)
    text = final_prompt(profile, messages, embedded_tokenizer, "logprob")
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.count("<|im_start|>system\n") == 1
    assert "[The End of Assistant B's Answer]\n<|im_end|>\n" in text


@pytest.mark.parametrize("judge", ["mt-bench", "skywork-critic", "mt-bench-tie", "con-j"])
def test_generate_mode_does_not_prefill_the_verdict(embedded_tokenizer, judge):
    profile = get_judge(judge)
    messages = render_messages(profile, QUESTION, RESPONSE_A, RESPONSE_B)
    generate = final_prompt(profile, messages, embedded_tokenizer, "generate")
    assert not generate.endswith("[[")
    assert generate.endswith("<|im_start|>assistant\n")
    if "logprob" in profile.modes:
        assert final_prompt(profile, messages, embedded_tokenizer, "logprob") == generate + "[["


def test_con_j_empty_system_message_is_kept(embedded_tokenizer):
    profile = get_judge("con-j")
    messages = render_messages(profile, QUESTION, RESPONSE_A, RESPONSE_B)
    text = final_prompt(profile, messages, embedded_tokenizer, "generate")
    # An explicit empty system turn, not the template's default system prompt.
    assert text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")
    assert "SmolLM" not in text


@pytest.mark.parametrize("judge", ["mt-bench", "skywork-critic", "mt-bench-tie"])
def test_label_token_ids_are_single_tokens(embedded_tokenizer, judge):
    profile = get_judge(judge)
    ids = label_token_ids(profile, embedded_tokenizer)
    assert set(ids) == set(profile.labels)
    assert len(set(ids.values())) == len(ids)
    prefix = embedded_tokenizer.encode(profile.logprob_prefix, add_special_tokens=False)
    for verdict, token in ids.items():
        assert isinstance(token, int)
        assert embedded_tokenizer.decode([token]) == profile.labels[verdict]
        # The prefix followed by that token is exactly the prefix + label text.
        assert embedded_tokenizer.encode(
            profile.logprob_prefix + profile.labels[verdict], add_special_tokens=False
        ) == prefix + [token]
        # ...and so it is at the real boundary: after a whole rendered prompt.
        prompt = final_prompt(profile, render_messages(profile, "Q?", "One.", "Two."), embedded_tokenizer, "logprob")
        base = embedded_tokenizer.encode(prompt, add_special_tokens=False)
        assert embedded_tokenizer.encode(prompt + profile.labels[verdict], add_special_tokens=False) == base + [token]


def test_a_label_that_merges_with_the_prompts_end_is_refused(embedded_tokenizer):
    """With the prefix "[[ " a label merges with the space before it (" A" is one token):
    the token after the prompt would not be the label's own."""
    labels = {"A": "A", "B": "B"}
    profile = JudgeProfile(name="spaced-prefix", version=1, description="prefix ends in a space",
                           user_template=FormatTemplate("{question}\n{answer_a}\n{answer_b}"),
                           read=bracket_reader(labels), labels=labels, logprob_prefix="[[ ")
    with pytest.raises(ValueError, match=r"'A' after the prompt's end \('\[\[ '\) is not one token of its own"):
        label_token_ids(profile, embedded_tokenizer)


def _multi_token_profile() -> JudgeProfile:
    labels = {"A": "Alpha-first-response", "B": "Beta-second-response"}
    return JudgeProfile(
        name="multi-token-labels",
        version=1,
        description="labels that are several tokens after [[",
        user_template=FormatTemplate("{question}\n{answer_a}\n{answer_b}"),
        read=bracket_reader(labels),
        labels=labels,
    )


def test_label_token_ids_refuses_multi_token_labels(embedded_tokenizer):
    profile = _multi_token_profile()
    prefix = embedded_tokenizer.encode("[[", add_special_tokens=False)
    for label in profile.labels.values():
        encoded = embedded_tokenizer.encode("[[" + label, add_special_tokens=False)
        assert len(encoded) > len(prefix) + 1, "precondition: the label is multi-token"
    with pytest.raises(ValueError) as excinfo:
        label_token_ids(profile, embedded_tokenizer)
    message = str(excinfo.value)
    assert "multi-token-labels" in message
    assert "Alpha-first-response" in message
    assert "not one token" in message
    assert "generate" in message
