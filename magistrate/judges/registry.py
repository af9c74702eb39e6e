"""The one place judges are registered.

Every judge comes in through `register`: the shipped ones and those of installed packages
through the `magistrate.judges` entry-point group (pyproject.toml; docs/judges.md), a
user's own with `register()` in the driver. Only the driver looks a judge up by name: the
resolved profile then travels with the job to every actor and replica.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from typing import Union

from magistrate.judges.custom import load_profile
from magistrate.judges.profile import JudgeProfile

ENTRY_POINTS = "magistrate.judges"
_Entry = Union[JudgeProfile, str]
_REGISTRY: dict[str, _Entry] = {}
_ALIASES: dict[str, str] = {}
_BROKEN: dict[str, str] = {}  # entry points that failed to load: name -> why
PLUGGED_IN: set[str] = set()  # names that came from an installed package
_LOADED = False


class UnknownJudge(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


def register(profile: _Entry, name: str | None = None, aliases: tuple[str, ...] = ()) -> None:
    """Register a profile (or a lazy "module:attr" string) under its name and aliases.
    Nothing is registered unless every name is free."""
    _load_entry_points()
    if isinstance(profile, JudgeProfile):
        name = name or profile.name
        aliases = tuple(aliases) + tuple(profile.aliases)
    elif name is None:
        raise ValueError("a lazy judge entry needs a name")
    taken = [n for n in (name, *aliases) if n in _REGISTRY or n in _ALIASES]
    if taken or len({name, *aliases}) != 1 + len(aliases):
        raise ValueError(f"a judge named {(taken or [name])[0]!r} is already registered")
    _REGISTRY[name] = profile
    _ALIASES.update(dict.fromkeys(aliases, name))


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)
    PLUGGED_IN.discard(name)
    for alias in [a for a, n in _ALIASES.items() if n == name]:
        del _ALIASES[alias]


def get_judge(name: str) -> JudgeProfile:
    """The profile for a name, an alias, or a path to a custom YAML profile."""
    if name.endswith((".yaml", ".yml")):
        return load_profile(name)
    _load_entry_points()
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        if key in _BROKEN:
            raise UnknownJudge(f"judge {name!r} is installed but failed to load: {_BROKEN[key]}")
        known = sorted(_REGISTRY) + sorted(_ALIASES)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownJudge(
            f"unknown judge {name!r}.{hint} Known judges: {', '.join(sorted(_REGISTRY))}; "
            "or give a path to a custom YAML profile."
        )
    entry = _REGISTRY[key]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        if not isinstance(entry, JudgeProfile):
            raise TypeError(f"{_REGISTRY[key]} is not a JudgeProfile")
        _REGISTRY[key] = entry
    return entry


def judge_names() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


def _load_entry_points() -> None:
    """Each entry point names a JudgeProfile ("module:attribute") under the judge's name.
    Loading one imports its module (profiles are pure Python), so aliases are known; one
    that fails to load is reported when asked for, and the others still work. Done once,
    on first use: a plugin imports magistrate.judges, which must be whole by then."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for point in sorted(importlib.metadata.entry_points(group=ENTRY_POINTS), key=lambda p: p.name):
        source = f"{point.value} (package {point.dist.name if point.dist else '?'})"
        try:
            profile = point.load()
            if not isinstance(profile, JudgeProfile):
                raise TypeError(f"{type(profile).__name__} is not a JudgeProfile")
            if profile.name != point.name:
                raise ValueError(f"the profile is named {profile.name!r}")
            register(profile)
            PLUGGED_IN.add(point.name)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the rest
            _BROKEN.setdefault(point.name, f"{source}: {type(exc).__name__}: {exc}")
