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
The template is data: it renders in Jinja's immutable sandbox, and one that reaches for
Python internals is refused naming the file (docs/judges.md).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jinja2
import yaml
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import (UNSAFE_ASYNC_GENERATOR_ATTRIBUTES, UNSAFE_COROUTINE_ATTRIBUTES,
                            UNSAFE_FUNCTION_ATTRIBUTES, UNSAFE_GENERATOR_ATTRIBUTES, UNSAFE_METHOD_ATTRIBUTES,
                            ImmutableSandboxedEnvironment)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from magistrate.judges.problems import validation_problems, yaml_problem
from magistrate.judges.profile import JudgeProfile, Reading


class TemplateRefused(ValueError):
    """A judge's template reached for what a template must not: said in one line."""


# Jinja's sandbox refuses attributes starting with `_` and these (frames and code of
# functions, generators and coroutines; a type's mro); the immutable sandbox also refuses
# changing a list, dict or set. The same names, seen in a template's source, refuse it
# when the judge loads, before any pair is rendered.
_INTERNAL = frozenset(UNSAFE_FUNCTION_ATTRIBUTES | UNSAFE_METHOD_ATTRIBUTES | UNSAFE_GENERATOR_ATTRIBUTES
                      | UNSAFE_COROUTINE_ATTRIBUTES | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES | {"mro"})
_SANDBOX = ImmutableSandboxedEnvironment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


@dataclass(frozen=True)
class JinjaTemplate:
    """A custom judge's template, rendered in Jinja's immutable sandbox. `origin` names
    the judge in a refusal."""

    text: str
    origin: str = "a custom judge"

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(meta.find_undeclared_variables(_SANDBOX.parse(self.text)))

    def check(self) -> None:
        """Refuses a template whose source reaches for Python internals (`__init__`,
        `__globals__`, `mro`...) by attribute, subscript or the attr filter."""
        reached: dict[str, int] = {}
        for node in _SANDBOX.parse(self.text).find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
            if isinstance(node, nodes.Getattr):
                name = node.attr
            elif isinstance(node, nodes.Getitem):
                name = node.arg.value if isinstance(node.arg, nodes.Const) else None
            else:
                const = node.name == "attr" and node.args and isinstance(node.args[0], nodes.Const)
                name = node.args[0].value if const else None
            if isinstance(name, str) and (name.startswith("_") or name in _INTERNAL):
                reached.setdefault(name, node.lineno)
        if reached:
            uses = ", ".join(f"{name!r} (line {line})" for name, line in sorted(reached.items(), key=lambda x: x[1]))
            raise TemplateRefused(f"{self.origin} tried to reach Python internals: its template uses {uses}; "
                                  "a judge file is data, and its template may use prompt, response_a and "
                                  "response_b")

    def render(self, **values: str) -> str:
        try:
            return _compiled(self.text).render(**values)
        except SecurityError as exc:
            raise TemplateRefused(f"{self.origin} tried to reach Python internals: Jinja's sandbox refused "
                                  f"it ({exc})") from None


@functools.lru_cache(maxsize=64)
def _compiled(text: str):
    """Compiling a template costs ~0.5 ms; rendering it ~20 us: compile once per text."""
    return _SANDBOX.from_string(text)


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
        template = JinjaTemplate(spec.template, f"custom judge {path} (judge {spec.name!r})")
        template.check()
        return JudgeProfile(
            name=spec.name,
            version=spec.version,
            description=spec.description,
            models=tuple(spec.models),
            system=spec.system,
            user_template=template,
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
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"custom judge {path} is not valid: template: {exc.message} (line {exc.lineno})") from None
    except TemplateRefused:
        raise
    except (ValueError, re.error) as exc:
        raise ValueError(f"custom judge {path} is not valid: {exc}") from None
