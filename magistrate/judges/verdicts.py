"""Reading verdicts: from generated text, or from next-token log-probabilities."""

from __future__ import annotations

import math
import re
from typing import Mapping

from magistrate.judges.profile import Reading, Verdict


# A verdict marker introduced as the judge's last word ("Final verdict: [[B]]").
_FINAL = re.compile(r"(final|overall|my)\s+(verdict|decision|judgement|judgment)\s*(is)?\s*[:：]?\s*\**\s*$", re.I)
# Spans that quote someone else's words: "...", “...”, `...`, and quoted (>) lines.
_QUOTED = re.compile(r'"[^"\n]*"|“[^”\n]*”|`[^`\n]*`|^>.*$', re.M)


def bracket_reader(labels: Mapping[str, str]):
    """A reader for "[[A]]"-style verdicts that never guesses (docs/judges.md#verdicts).

    - A marker inside a quotation ("...", “...”, `...`, a `>` line) quotes a response or
      the instructions: it is not the judge's verdict.
    - Every other marker must name the same verdict. Where they disagree, the text
      resolves it only by an explicit last word: a final marker introduced as the
      verdict ("Final verdict: [[B]]"). Anything else is an error naming the markers.
    - A marker cut off at the end ("... [[A") is an error saying the output was cut off.
    """
    by_text = {text: verdict for verdict, text in labels.items()}
    pattern = re.compile(r"\[\[(" + "|".join(re.escape(t) for t in by_text) + r")\]\]")
    truncated = re.compile(r"\[\[?[^\[\]\s]{0,3}\s*$")

    def read(text: str) -> Reading:
        if not text or not text.strip():
            return Reading(None, error="empty judge output")
        quoted = [m.span() for m in _QUOTED.finditer(text)]
        matches = [m for m in pattern.finditer(text)
                   if not any(a <= m.start() and m.end() <= b for a, b in quoted)]
        if not matches:
            if truncated.search(text):
                return Reading(None, rationale=text.strip(),
                               error="the verdict marker is cut off at the end of the output (raise --max-new-tokens)")
            return Reading(None, rationale=text.strip(), error="no verdict marker in judge output")
        last = matches[-1]
        said = {by_text[m.group(1)] for m in matches}
        if len(said) > 1 and not _FINAL.search(text[: last.start()]):
            shown = " and ".join(f"[[{labels[v]}]]" for v in sorted(said))
            return Reading(None, rationale=text.strip(),
                           error=f"conflicting verdict markers ({shown}) with no final verdict: none is taken")
        return Reading(by_text[last.group(1)], rationale=text[: last.start()].strip() or None)

    return read


def label_mass(logprobs: Mapping[str, float]) -> float:
    """The next-token probability the verdict labels have together (1 when the model
    puts all of it on a label; near 0 when it meant to write something else)."""
    return min(1.0, sum(math.exp(lp) for lp in logprobs.values()))


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
