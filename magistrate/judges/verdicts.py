"""Reading verdicts: from generated text, or from next-token log-probabilities."""

from __future__ import annotations

import math
import re
from typing import Mapping

from magistrate.judges.profile import Reading, Verdict


# A verdict marker introduced as the judge's last word ("Final verdict: [[B]]").
_FINAL = re.compile(r"(final|overall|my|revised|updated|corrected|new)\s+(verdict|decision|judgement|judgment)"
                    r"\s*(is)?\s*[:：]?\s*\**\s*$", re.I)
# Where a marker is someone else's words or an aside, not the judge's verdict: a quotation
# ("...", “...”, `...`, '[[X]]', a `>` line), parentheses, ~~struck out~~.
_ASIDE = re.compile(r'"[^"\n]*"|“[^”\n]*”|`[^`\n]*`|^>.*$|\([^()\n]*\)|~~[^~\n]*~~|\'\[\[[^\]\n]*\]\]\'', re.M)
# ...or a marker named as the rejected option or restating the format ("not [[A]]",
# "[[A]] if Assistant A is better", "[[C]] for a tie").
_NOT_BEFORE = re.compile(r"\bnot\s+$", re.I)
_NOT_AFTER = re.compile(r"^\s*(if\b|for a tie)", re.I)


def bracket_reader(labels: Mapping[str, str]):
    """A reader for "[[A]]"-style verdicts that never guesses (docs/judges.md#reading-verdicts).

    - A marker in a quotation, an aside (parentheses, struck out), negated ("not [[A]]") or
      restating the format ("[[A]] if Assistant A is better") is not the judge's verdict.
    - Every other marker must name the same verdict; a one-letter marker that is not one
      of this judge's labels ([[C]] for a judge without ties) disagrees with them all.
      Where they disagree, the text resolves it only by an explicit last word: a final
      marker introduced as the verdict ("Final verdict: [[B]]", "Revised verdict: [[B]]").
      Anything else is an error naming the markers.
    - A marker cut off at the end ("... [[A") is an error saying the output was cut off.
    """
    by_text = {text: verdict for verdict, text in labels.items()}
    markers = re.compile(r"\[\[(" + "|".join(map(re.escape, sorted(by_text, key=len, reverse=True))) + r"|[A-Z])\]\]")
    truncated = re.compile(r"\[\[?[^\[\]\s]{0,3}\s*$")

    def said(text: str, match: re.Match) -> bool:
        return not (_NOT_BEFORE.search(text[max(0, match.start() - 8):match.start()])
                    or _NOT_AFTER.search(text[match.end():match.end() + 12]))

    def read(text: str) -> Reading:
        if not text or not text.strip():
            return Reading(None, error="empty judge output")
        asides = [m.span() for m in _ASIDE.finditer(text)]
        matches = [m for m in markers.finditer(text) if said(text, m)
                   and not any(a <= m.start() and m.end() <= b for a, b in asides)]
        if not matches or not any(m.group(1) in by_text for m in matches):
            if truncated.search(text):
                return Reading(None, rationale=text.strip(),
                               error="the verdict marker is cut off at the end of the output (raise --max-new-tokens)")
            return Reading(None, rationale=text.strip(), error="no verdict marker in judge output")
        last = matches[-1]
        if len({m.group(1) for m in matches}) > 1 and not (last.group(1) in by_text
                                                            and _FINAL.search(text[: last.start()])):
            shown = " and ".join(f"[[{x}]]" for x in sorted({m.group(1) for m in matches}))
            return Reading(None, rationale=text.strip(),
                           error=f"conflicting verdict markers ({shown}) with no final verdict: none is taken")
        return Reading(by_text[last.group(1)], rationale=text[: last.start()].strip() or None,
                       label_at=last.start(1))

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
    """Generate mode where the label's log-probabilities cannot be read
    (judges/generated.py): a verdict is certainty, a tie is one half."""
    return {"A": 1.0, "B": 0.0, "tie": 0.5}[verdict]
