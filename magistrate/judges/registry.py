"""The one place judges are registered.

Seed judges register through `register` exactly as a user's would. Entries may be lazy
("module:attribute") so listing judges imports nothing heavy.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Union

from magistrate.judges.profile import JudgeProfile

_Entry = Union[JudgeProfile, str]
_REGISTRY: dict[str, _Entry] = {}
_ALIASES: dict[str, str] = {}

# Built-in judge families, one module each: name -> (lazy entry, aliases). Adding one is
# one line here and one file; listing them imports none.
BUILTIN = {
    "mt-bench": ("magistrate.judges.mt_bench:PROFILE", ()),
    "mt-bench-tie": ("magistrate.judges.mt_bench:TIE_PROFILE", ()),
    "skywork-critic": ("magistrate.judges.skywork_critic:PROFILE", ("skywork",)),
    "con-j": ("magistrate.judges.con_j:PROFILE", ("conj",)),
}


class UnknownJudge(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


def register(profile: _Entry, name: str | None = None, aliases: tuple[str, ...] = ()) -> None:
    """Register a profile (or a lazy "module:attr" string) under its name and aliases.
    Nothing is registered unless every name is free."""
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
    for alias in [a for a, n in _ALIASES.items() if n == name]:
        del _ALIASES[alias]


def get_judge(name: str) -> JudgeProfile:
    """The profile for a name, an alias, or a path to a custom YAML profile."""
    if name.endswith((".yaml", ".yml")):
        from magistrate.judges.custom import load_profile

        return load_profile(name)
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
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
    return sorted(_REGISTRY)


for _name, (_path, _aliases) in BUILTIN.items():
    register(_path, name=_name, aliases=_aliases)
