"""What an input pair is, and how a bad one is told: the contract every way in shares.

The batch reader (pipelines/prepare.py) and the online endpoint (serve/) check a pair with
these functions, so a row gets the same answer, word for word, however it arrives. Pure
Python: no Arrow, no Ray.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from typing import Any

# Columns of a prepared pair besides the standard ones (schema.STANDARD_INPUT):
PROMPT_MESSAGES = "prompt_messages"  # a multi-turn prompt as typed messages, else null
INVALID = "_invalid"  # why the row cannot be judged, else null; never written out
# Fields longer than this are refused before rendering or tokenising: no judge's context
# holds a million characters, and tokenising a 50 MB field first would take minutes.
MAX_FIELD_CHARS = 1_000_000
MAX_MESSAGES = 1_000
_LABELS = {"a": "A", "1": "A", "1.0": "A", "model_a": "A",
           "b": "B", "2": "B", "2.0": "B", "model_b": "B",
           "tie": "tie", "c": "tie", "0": "tie", "0.0": "tie", "tie (bothbad)": "tie"}


def derived_id(prompt: Any, response_a: Any, response_b: Any) -> str:
    """A stable id from content, for rows that come without one."""
    return _digest([prompt, response_a, response_b])


def place_id(path: str, where: str) -> str:
    """The id of a row that cannot be judged and comes without one: from its place (the
    file's full path and the line or row), since such rows often share their content (two
    lines `{"note": 1}`, or `{not json` at line 1 of a/x.jsonl and of b/x.jsonl) and would
    otherwise share an id, which refuses the whole job as duplicate ids."""
    return _digest(["place", path, where])


def _digest(values: list) -> str:
    try:
        payload = json.dumps(values, ensure_ascii=False, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        # Bytes, decimals, dates, lone surrogates: only rows that cannot be judged hold
        # them, and they still need an id of their own.
        payload = json.dumps(values, ensure_ascii=True, sort_keys=True, default=str).encode("utf-8")
    return "sha256-" + hashlib.sha256(payload).hexdigest()[:20]


def is_missing(value: Any) -> bool:
    """None, an empty string, or NaN (pandas writes missing values as NaN)."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def normalise_label(value: Any) -> tuple[str | None, str | None]:
    """(A | B | tie | None, None), or (None, why the label is not understood)."""
    if is_missing(value):
        return None, None
    label = _LABELS.get(str(value).strip().lower())
    if label is None:
        return None, (f"label is not understood ({safe_text(str(value))[:50]!r}): give A, B or tie "
                      "(or 1/2, model_a/model_b), or leave it empty")
    return label, None


def as_text(name: str, value: Any, max_chars: int = MAX_FIELD_CHARS) -> tuple[str | None, str | None]:
    """(the value as text, None), or (None, why it is not usable text, naming the field)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, f"{name} is missing"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"{name} is bytes that are not UTF-8 (byte 0x{value[exc.start]:02x} at {exc.start + 1})"
    if not isinstance(value, str):
        return None, f"{name} is not text (got {type(value).__name__})"
    if len(value) > max_chars:
        return None, f"{name} is {len(value):,} characters, over the limit of {max_chars:,} (--max-field-chars)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return None, (f"{name} holds a lone surrogate (U+{ord(value[exc.start]):04X}) at character "
                      f"{exc.start + 1}: not valid Unicode")
    return value, None


def safe_text(value: Any) -> str | None:
    """Any value as text Arrow can hold, for the output of a row that could not be judged:
    invalid Unicode escaped, not dropped."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def row_problem(prompt: Any, response_a: Any, response_b: Any, max_chars: int = MAX_FIELD_CHARS,
                max_messages: int = MAX_MESSAGES, max_pair_chars: int | None = None) -> str | None:
    """Why a row cannot be judged, or None. `max_chars` holds for each field (the prompt
    over all its messages); `max_pair_chars`, when given, for the three together."""
    if isinstance(prompt, list):
        if not prompt:
            return "prompt is an empty list of messages"
        if len(prompt) > max_messages:
            return f"prompt has {len(prompt):,} messages, over the limit of {max_messages:,}"
        total = 0
        for i, message in enumerate(prompt):
            if not isinstance(message, dict):
                return f"prompt message {i} is not {{role, content}}"
            content = message.get("content")
            if content is None or not isinstance(content, str):
                return f"prompt message {i} is not {{role, content}} with string content"
            _, problem = as_text(f"prompt message {i} content", content, max_chars)
            if problem:
                return problem
            total += len(content)
            if message.get("role") not in ("system", "user", "assistant"):
                return f"prompt message {i} has role {safe_text(message.get('role'))!r}"
        if total > max_chars:
            return f"prompt is {total:,} characters over its messages, over the limit of {max_chars:,} (--max-field-chars)"
        if prompt[-1].get("role") != "user":
            return "a multi-turn prompt must end with a user message"
    elif isinstance(prompt, (str, bytes)) or prompt is None or isinstance(prompt, float):
        text, problem = as_text("prompt", prompt, max_chars)
        if problem:
            return problem
        if not text.strip():
            return "prompt is empty"
    else:
        return f"prompt is not a string or a list of messages (got {type(prompt).__name__})"
    for name, value in (("response_a", response_a), ("response_b", response_b)):
        _, problem = as_text(name, value, max_chars)
        if problem:
            return problem
    if max_pair_chars is not None:
        total = len(response_a) + len(response_b) + (
            sum(len(m["content"]) for m in prompt) if isinstance(prompt, list) else len(prompt))
        if total > max_pair_chars:
            return (f"the pair is {total:,} characters (prompt and responses), over the limit of "
                    f"{max_pair_chars:,}")
    return None


_DEPTH = 200  # JSON nested deeper than this is refused (Python's parser overflows near 1000)


class _DuplicateKey(ValueError):
    pass


class _InvalidKey(ValueError):
    pass


def _checked_object(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are each valid Unicode and given once. A key holding a lone
    surrogate (`"\\ud800"`) could not be written as a column name: it is told here, not
    met later as an encoding error."""
    for key, _ in pairs:
        _, problem = as_text("key", key)
        if problem:
            raise _InvalidKey(problem)
    record = dict(pairs)
    if len(record) != len(pairs):
        twice = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise _DuplicateKey(twice)
    return record


def _depth(value: Any, limit: int = _DEPTH) -> int:
    """Nesting depth of a parsed JSON value, counted up to limit + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_line(text: str) -> tuple[dict, str | None]:
    """A JSON line -> (record, None), or ({}, the problem): never an exception."""
    try:
        record = json.loads(text, object_pairs_hook=_checked_object)
    except _DuplicateKey as exc:
        return {}, f"key {safe_text(str(exc))[:80]!r} appears more than once in this JSON object; keep one"
    except _InvalidKey as exc:
        return {}, f"a JSON object {exc}"
    except RecursionError:
        return {}, f"JSON nested too deeply (more than {_DEPTH} levels)"
    except json.JSONDecodeError as exc:
        return {}, f"not valid JSON ({exc.msg} at column {exc.colno}): {safe_text(text[:200])!r}"
    if not isinstance(record, dict):
        return {}, f"a JSON {type(record).__name__}, not an object: {safe_text(text[:200])!r}"
    if _depth(record) > _DEPTH:
        return {}, f"JSON nested too deeply (more than {_DEPTH} levels)"
    return record, None


def decode_line(line: bytes) -> tuple[str | None, str | None]:
    """(text, None), or (None, why the bytes are not UTF-8)."""
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, (f"not valid UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); "
                      "save the file as UTF-8")


def judge_prompt(pair: dict) -> Any:
    """The prompt a prepared pair is judged on: its messages when it has them, else its text."""
    return pair.get(PROMPT_MESSAGES) or pair["prompt"]
