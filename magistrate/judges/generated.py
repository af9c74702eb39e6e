"""Generate mode's probability: the verdict label's log-probabilities at the step where
the judge wrote it, renormalised over the labels as in logprob mode (AlpacaEval's
weighted annotators read their preference the same way).

Asked with `label_ids`, the engine returns beside the text the generated token ids and,
for each step whose token is one of those ids, their log-probabilities (`Generation`).
The reader says where in the text the label it took starts (`Reading.label_at`);
`p_first_at_verdict` finds the step that wrote it. Where it cannot, the order keeps
1 / ½ / 0 from the verdict and says so (`p_source`, docs/output-schema.md).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from magistrate.judges.profile import JudgeProfile, Verdict
from magistrate.judges.verdicts import label_probabilities, p_first_from_probabilities

# Where an order's p_first came from (the per-order `p_source` field).
FROM_LOGPROBS = "logprobs"
FROM_VERDICT = "verdict"


class Generation(NamedTuple):
    """One generated answer. An engine that returns only (text, completion tokens) gives
    no log-probabilities: p_first then comes from the verdict."""

    text: str
    completion_tokens: int
    token_ids: Sequence[int] = ()
    # step -> {label token id: log-probability}, only for the steps whose token is a
    # label token: a few per answer, not the vocabulary at every step.
    label_logprobs: Mapping[int, Mapping[int, float]] = MappingProxyType({})


def label_forms(profile: JudgeProfile, tokenizer: Any) -> tuple[dict[str, int], ...]:
    """The ways this tokenizer writes every label of the judge as one token of its own:
    the label alone ("A" after "[[", "1" after ":") and after a space (" A"). A form in
    which some label is not a single token, or two labels share a token, is left out."""
    forms: list[dict[str, int]] = []
    for before in ("", " "):
        encoded = {v: tokenizer.encode(before + label, add_special_tokens=False)
                   for v, label in profile.labels.items()}
        form = {v: ids[0] for v, ids in encoded.items() if len(ids) == 1}
        if len(form) == len(encoded) and len(set(form.values())) == len(form) and form not in forms:
            forms.append(form)
    return tuple(forms)


def p_first_at_verdict(generation: Generation, label_at: int | None, verdict: Verdict,
                       labels: Mapping[str, str], forms: Sequence[Mapping[str, int]],
                       decode: Callable[[Sequence[int]], str]) -> float | None:
    """P(first shown is better) from the step that wrote the verdict's label, or None.

    That step's token is the verdict's label token in one of `forms`, and the generated
    tokens up to it decode to the text up to the end of the label (`label_at` is where
    the label starts). Its label log-probabilities are renormalised over that form's
    labels, a tie counting half. None when the reader gave no position, the text there
    is not the label, no step wrote it as a token of its own (merged into "[[A", split
    in two) or the engine returned no log-probabilities."""
    if label_at is None or not generation.label_logprobs:
        return None
    end = label_at + len(labels[verdict])
    if generation.text[label_at:end] != labels[verdict]:
        return None
    by_token = {form[verdict]: form for form in forms}
    ids = generation.token_ids
    for step in sorted(generation.label_logprobs, reverse=True):  # the verdict is usually last
        form = by_token.get(ids[step]) if step < len(ids) else None
        if form is None:
            continue
        written = decode(ids[: step + 1])
        if len(written) < end:
            break  # every earlier step ends before the label
        if written != generation.text[:end]:
            continue
        logprobs = generation.label_logprobs[step]
        if not all(token in logprobs for token in form.values()):
            return None
        return p_first_from_probabilities(label_probabilities({v: logprobs[t] for v, t in form.items()}))
    return None
