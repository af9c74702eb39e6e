"""Custom judges from a YAML file: a Jinja template, roles, verdict labels, a pattern.

    name: my-judge
    version: 1
    description: terse pairwise judge
    models: [my-org/my-judge-7b]
    system: You are a careful judge.            # optional; omit for no system message
    template: |                                 # Jinja; sees prompt, response_a, response_b
      Question: {{ prompt }}
      Answer A: {{ response_a }}
      Answer B: {{ response_b }}
      Reply [[A]], [[B]] or [[C]] for a tie.
    labels: {A: "A", B: "B", tie: "C"}          # verdict -> what the judge writes
    pattern: '\\[\\[(A|B|C)\\]\\]'             # group 1 is a label; the last match wins
    default_mode: generate                      # or logprob
    logprob_prefix: "[["                        # logprob mode: the assistant turn starts so
    max_new_tokens: 256

See examples/custom_judge.yaml. A file that does not fit fails loudly, naming the field.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jinja2
import yaml
from jinja2 import meta
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from magistrate.judges.problems import validation_problems, yaml_problem
from magistrate.judges.profile import JudgeProfile, Reading


@dataclass(frozen=True)
class JinjaTemplate:
    text: str

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(meta.find_undeclared_variables(jinja2.Environment().parse(self.text)))

    def render(self, **values: str) -> str:
        return _compiled(self.text).render(**values)


@functools.lru_cache(maxsize=64)
def _compiled(text: str):
    """Compiling a template costs ~0.5 ms; rendering it ~20 us: compile once per text."""
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.from_string(text)


class CustomJudge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: int = 1
    description: str = ""
    models: list[str] = Field(default_factory=list)
    system: str | None = None
    template: str
    labels: dict[Literal["A", "B", "tie"], str] = Field(default_factory=lambda: {"A": "A", "B": "B"})
    pattern: str
    default_mode: Literal["logprob", "generate"] = "generate"
    logprob_prefix: str = "[["
    max_new_tokens: int = 512
    markers: list[str] = Field(default_factory=list)
    stop: list[str] = Field(default_factory=list, description="generate mode stops at the first of these")

    @field_validator("pattern")
    @classmethod
    def _one_group(cls, value: str) -> str:
        if re.compile(value).groups < 1:
            raise ValueError("pattern needs a group that captures the label")
        return value


def pattern_reader(pattern: str, labels: dict[str, str]):
    by_text = {text: verdict for verdict, text in labels.items()}
    compiled = re.compile(pattern)

    def read(text: str) -> Reading:
        if not text or not text.strip():
            return Reading(None, error="empty judge output")
        matches = [m for m in compiled.finditer(text) if m.group(1) in by_text]
        if not matches:
            return Reading(None, rationale=text.strip(), error="no verdict matching the pattern")
        last = matches[-1]
        return Reading(by_text[last.group(1)], rationale=text[: last.start()].strip() or None,
                       label_at=last.start(1))

    return read


def load_profile(path: str | Path) -> JudgeProfile:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = CustomJudge.model_validate(raw)
        return JudgeProfile(
            name=spec.name,
            version=spec.version,
            description=spec.description,
            models=tuple(spec.models),
            system=spec.system,
            user_template=JinjaTemplate(spec.template),
            slots={"prompt": "prompt", "a": "response_a", "b": "response_b"},
            read=pattern_reader(spec.pattern, dict(spec.labels)),
            default_mode=spec.default_mode,
            labels=dict(spec.labels),
            logprob_prefix=spec.logprob_prefix,
            max_new_tokens=spec.max_new_tokens,
            markers=tuple(spec.markers)
            + tuple(f"{spec.logprob_prefix}{t}" for t in spec.labels.values()),
            stop=tuple(spec.stop),
        )
    except FileNotFoundError:
        raise ValueError(f"custom judge {path}: no such file") from None
    except ValidationError as exc:
        raise ValueError(f"custom judge {path} is not valid: {validation_problems(exc)}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"custom judge {path} is not valid YAML: {yaml_problem(exc)}") from None
    except (ValueError, re.error) as exc:
        raise ValueError(f"custom judge {path} is not valid: {exc}") from None
