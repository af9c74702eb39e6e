"""What a judge profile is: prompt data plus a verdict reader.

A profile never talks to an engine. It says which chat messages the judge sees for a
pair, what the assistant turn starts with in logprob mode, which tokens carry the
verdict, and how a generated text is read back into a verdict.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Callable, Literal, Mapping, Protocol

Mode = Literal["logprob", "generate"]
Verdict = Literal["A", "B", "tie"]


def packaged_text(name: str) -> str:
    """A prompt text shipped in judges/texts/, byte for byte (see texts/SOURCES.md)."""
    return (files("magistrate.judges") / "texts" / name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Reading:
    """A verdict read from one judge output, in the frame the judge saw (A = shown first)."""

    verdict: Verdict | None
    rationale: str | None = None
    error: str | None = None
    # Where in the text the label of the verdict taken starts (a character offset), when
    # the reader knows: generate mode reads p_first from the token written there
    # (judges/generated.py). None: p_first comes from the verdict (1, ½, 0).
    label_at: int | None = None


class Template(Protocol):
    fields: frozenset[str]

    def render(self, **values: str) -> str: ...


@dataclass(frozen=True)
class FormatTemplate:
    """A `str.format` template, kept exactly as the model card's Python writes it."""

    text: str

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(f for _, f, _, _ in string.Formatter().parse(self.text) if f)

    def render(self, **values: str) -> str:
        return self.text.format(**values)


@dataclass(frozen=True)
class JudgeProfile:
    """A judge family: data, plus `read` for generate mode.

    `labels` maps each verdict to the text the judge writes for it ("A" -> "A",
    "tie" -> "C"); in logprob mode the assistant turn starts with `logprob_prefix` and
    the next token is one of the labels.
    """

    name: str
    version: int
    description: str
    user_template: Template
    read: Callable[[str], Reading]
    system: str | None = None
    models: tuple[str, ...] = ()
    default_mode: Mode = "generate"
    modes: tuple[Mode, ...] = ("logprob", "generate")
    labels: Mapping[str, str] = field(default_factory=lambda: {"A": "A", "B": "B"})
    logprob_prefix: str = "[["
    max_new_tokens: int = 512
    # Field names the template uses for the question and the two answers.
    slots: Mapping[str, str] = field(
        default_factory=lambda: {"prompt": "question", "a": "answer_a", "b": "answer_b"}
    )
    # Substrings of the template that, found inside a response, could steer a careless
    # verdict reader: the row is flagged, and the readers below never look inside the
    # rendered responses.
    markers: tuple[str, ...] = ()
    # Generate mode stops at the first of these (kept in the text): where the verdict is
    # complete, so a judge that goes on writing after it costs nothing more.
    stop: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    # Two-turn prompts ([user, assistant, user]) use these when given (MT-Bench's
    # multi-turn prompt); other multi-turn prompts are rendered as a transcript.
    multi_turn_system: str | None = None
    multi_turn_template: Template | None = None

    def __post_init__(self) -> None:
        missing = {self.slots["prompt"], self.slots["a"], self.slots["b"]} - set(
            self.user_template.fields
        )
        if missing:
            raise ValueError(
                f"judge profile {self.name!r}: template lacks the fields {sorted(missing)}"
            )
        if self.default_mode not in self.modes:
            raise ValueError(f"judge profile {self.name!r}: default mode not in its modes")
        if not {"A", "B"} <= set(self.labels):
            raise ValueError(f"judge profile {self.name!r}: labels need A and B")
