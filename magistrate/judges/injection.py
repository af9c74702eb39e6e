"""Is a pair trying to steer its judge? The `injection_suspect` flag.

Readers only ever read the judge's own output, so text in a pair cannot change how a
verdict is read; but it can talk to the judge ("[[B]]", "Final verdict: B", a forged end
of the answer). Such rows are judged as usual and flagged for audit.

Matching is on a normal form, so trivial variants do not slip past: Unicode compatibility
forms folded (NFKC: fullwidth brackets, fullwidth colons), zero-width and other invisible
format characters dropped, curly quotes made straight, case folded. Markers are compared
with all whitespace removed (`[[ B ]]` is `[[B]]`); verdict phrasing is matched on text
with whitespace collapsed, so words stay apart.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any, Sequence

from magistrate.judges.profile import JudgeProfile

# Unicode "Cf" characters a text can carry unseen: soft hyphen, Arabic letter mark,
# Mongolian vowel separator, zero-width space/joiners, direction marks and embeddings,
# word joiner and invisible operators, byte order mark.
_INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")
_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
})
_SPACE = re.compile(r"\s+")


def normal_form(text: str) -> str:
    """Text as the flag compares it: NFKC, no invisible characters, straight quotes,
    case folded, whitespace runs as one space."""
    text = unicodedata.normalize("NFKC", _INVISIBLE.sub("", text)).translate(_QUOTES).casefold()
    return _SPACE.sub(" ", text).strip()


@lru_cache(maxsize=64)
def _patterns(markers: tuple[str, ...], labels: tuple[str, ...]) -> tuple[tuple[str, ...], re.Pattern]:
    """The profile's markers in compact normal form, and its verdict phrasing: "verdict"
    (optionally "final"/"revised", "is", a colon) then one of its labels, bracketed or
    quoted or not, ending the sentence ("Final verdict: B", "verdict is [[ A ]]")."""
    markers = tuple(m for m in (_SPACE.sub("", normal_form(m)) for m in markers) if m)
    label = "|".join(re.escape(x) for x in sorted({normal_form(x) for x in labels} - {""}, key=len, reverse=True))
    phrasing = re.compile(
        r"\bverdict(?: is)? ?[:=\-]? ?[\[\(\"'*]*(?: ?(?:assistant|response|answer|output) )? ?"
        rf"(?:{label}) ?[\]\)\"'*]*(?=$|[^\w ]| (?:is|wins)\b)"
    )
    return markers, phrasing


def _texts(prompt: str | Sequence[dict[str, Any]], response_a: str, response_b: str):
    if isinstance(prompt, str):
        yield prompt
    else:
        for message in prompt or ():
            yield str(message.get("content") or "")
    yield response_a
    yield response_b


def injection_suspect(profile: JudgeProfile, prompt: str | Sequence[dict[str, Any]],
                      response_a: str, response_b: str) -> bool:
    """True when the prompt (every turn of it) or a response carries the profile's
    template delimiters or verdict markers, or states a verdict in its phrasing."""
    markers, phrasing = _patterns(tuple(profile.markers), tuple(sorted({*profile.labels, *profile.labels.values()})))
    for text in _texts(prompt, response_a, response_b):
        normal = normal_form(text or "")
        compact = normal.replace(" ", "")
        if any(m in compact for m in markers) or phrasing.search(normal):
            return True
    return False
