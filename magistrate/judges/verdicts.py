"""Reading verdicts: from generated text, or from next-token log-probabilities."""

from __future__ import annotations

import math
import re
from typing import Mapping

from magistrate.judges.profile import Reading, Verdict


def bracket_reader(labels: Mapping[str, str]):
    """A reader for "[[A]]"-style verdicts.

    The last marker in the output wins: judges are told to end with their verdict, and a
    rationale that quotes a marker (or a response that contained one) comes before it.
    """
    by_text = {text: verdict for verdict, text in labels.items()}
    pattern = re.compile(r"\[\[(" + "|".join(re.escape(t) for t in by_text) + r")\]\]")

    def read(text: str) -> Reading:
        if not text or not text.strip():
            return Reading(None, error="empty judge output")
        matches = list(pattern.finditer(text))
        if not matches:
            return Reading(None, rationale=text.strip(), error="no verdict marker in judge output")
        last = matches[-1]
        return Reading(by_text[last.group(1)], rationale=text[: last.start()].strip() or None)

    return read


def label_probabilities(logprobs: Mapping[str, float]) -> dict[str, float]:
    """Renormalise the next-token log-probabilities of the verdict labels to sum to 1."""
    if not logprobs:
        raise ValueError("no verdict label among the returned log-probabilities")
    top = max(logprobs.values())
    weights = {label: math.exp(lp - top) for label, lp in logprobs.items()}
    total = sum(weights.values())
    return {label: w / total for label, w in weights.items()}


def p_first_from_probabilities(probs: Mapping[str, float]) -> float:
    """P(the response shown first is better). A tie label, if the judge has one, counts
    half for each side."""
    return probs.get("A", 0.0) + 0.5 * probs.get("tie", 0.0)


def verdict_from_probabilities(probs: Mapping[str, float]) -> Verdict:
    best = max(probs.values())
    winners = [v for v, p in probs.items() if p == best]
    return winners[0] if len(winners) == 1 else "tie"


def p_first_from_verdict(verdict: Verdict) -> float:
    """Generate mode has no distribution: a verdict is certainty, a tie is one half."""
    return {"A": 1.0, "B": 0.0, "tie": 0.5}[verdict]
