"""From a pair and an order to the chat messages (and, with a tokenizer, the prompt)."""

from __future__ import annotations

import hashlib
from typing import Any, Literal, Sequence

from magistrate.judges.profile import JudgeProfile, Mode

Order = Literal["ab", "ba"]
OrderMode = Literal["both", "ab", "random"]


def orders_for(order_mode: OrderMode, pair_id: str, seed: int = 0) -> list[Order]:
    """Which orders a pair is judged in. `random` is seeded per pair, so a rerun (or a
    resumed run) picks the same order for the same id."""
    if order_mode == "both":
        return ["ab", "ba"]
    if order_mode == "ab":
        return ["ab"]
    if order_mode == "random":
        digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()
        return ["ab" if digest[0] % 2 == 0 else "ba"]
    raise ValueError(f"unknown order {order_mode!r}: use both, ab or random")


def prompt_text(prompt: str | Sequence[dict[str, Any]]) -> str:
    """The question as the judge reads it. A multi-turn prompt (chat messages) becomes a
    transcript of the conversation so far, ending with the turn being answered."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0].get("role") == "user":
        return str(prompt[0]["content"])
    lines = []
    for message in prompt:
        role = str(message.get("role", "user")).capitalize()
        lines.append(f"{role}: {message.get('content', '')}")
    return "\n\n".join(lines)


def render_messages(
    profile: JudgeProfile,
    prompt: str | Sequence[dict[str, Any]],
    response_a: str,
    response_b: str,
    order: Order = "ab",
) -> list[dict[str, str]]:
    """The chat messages the judge sees. In order "ba" the original B is shown first."""
    first, second = (response_a, response_b) if order == "ab" else (response_b, response_a)
    if profile.multi_turn_template is not None and _is_two_turn(prompt):
        user = profile.multi_turn_template.render(
            question_1=str(prompt[0]["content"]),
            answer_a_1=str(prompt[1]["content"]),
            answer_b_1=str(prompt[1]["content"]),
            question_2=str(prompt[2]["content"]),
            answer_a_2=first,
            answer_b_2=second,
        )
        return _with_system(profile.multi_turn_system, user)
    user = profile.user_template.render(
        **{
            profile.slots["prompt"]: prompt_text(prompt),
            profile.slots["a"]: first,
            profile.slots["b"]: second,
        }
    )
    return _with_system(profile.system, user)


def _is_two_turn(prompt: Any) -> bool:
    return not isinstance(prompt, str) and [m.get("role") for m in prompt] == [
        "user", "assistant", "user"
    ]


def _with_system(system: str | None, user: str) -> list[dict[str, str]]:
    head = [] if system is None else [{"role": "system", "content": system}]
    return head + [{"role": "user", "content": user}]


def final_prompt(
    profile: JudgeProfile, messages: list[dict[str, str]], tokenizer: Any, mode: Mode
) -> str:
    """The prompt string the engine gets: the model's own chat template, then (logprob
    mode) the start of the verdict, so the next token is the verdict label."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + profile.logprob_prefix if mode == "logprob" else text


def label_token_ids(profile: JudgeProfile, tokenizer: Any) -> dict[str, int]:
    """The token that carries each verdict label right after the logprob prefix, checked
    at the real boundary: a rendered prompt (chat template, its last characters, the
    prefix) and a label tokenised together must give the prompt's own tokens and then one
    token, the label's. A tokenizer where a label merges with what comes before it, or
    splits, is refused with a clear message rather than read wrongly."""
    messages = render_messages(profile, "Which is better?", "The first answer.", "The second answer.")
    prompt = final_prompt(profile, messages, tokenizer, "logprob")
    base = tokenizer.encode(prompt, add_special_tokens=False)
    ids = {}
    for verdict, label in profile.labels.items():
        full = tokenizer.encode(prompt + label, add_special_tokens=False)
        if full[: len(base)] != base or len(full) != len(base) + 1:
            tail = tokenizer.decode(full[len(base) - 1:] if full[: len(base)] == base else full[-4:])
            raise ValueError(
                f"judge {profile.name!r}: with this tokenizer the verdict {label!r} after the prompt's "
                f"end ({profile.logprob_prefix!r}) is not one token of its own (it tokenises as {tail!r}); "
                "logprob mode cannot read it: use --mode generate"
            )
        ids[verdict] = full[-1]
    return ids
