"""What is wrong with a file a user wrote (a custom judge, a calibration, a cascade), in
one line the CLI can print: the field and the reason, not pydantic's or PyYAML's report."""

from __future__ import annotations

import yaml
from pydantic import ValidationError


def validation_problems(exc: ValidationError) -> str:
    """`field.sub: reason; ...` for every error (a problem of the whole file is `file`)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's reason and where (its report spans several lines, quoting the source)."""
    mark = getattr(exc, "problem_mark", None)
    reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{reason} at line {mark.line + 1}, column {mark.column + 1}" if mark else reason
