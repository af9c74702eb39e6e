"""Con-J-Qwen2-7B: the model card's Chinese prompt, an empty system message, the Qwen2
chat template; the judge writes JSON {"原因": ..., "更好的回答": 1|2}.

The reader (docs/judges.md#reading-verdicts) reads every form Con-J's own evaluation
(src/evaluation/evaluate_utils.py, with its lenient demjson parser) and RewardBench's
con_j_evaluate read correctly, and never guesses where they do:

1. candidates, in the order they appear: every {...} object that parses as JSON, as a
   Python dict, or with its bare keys quoted (`{"原因": "…", 更好的回答: 1}`, the authors'
   prefill form), holding a verdict key (the authors' spellings, English ones, a stray
   space or colon); then `key: value` lines outside those objects (markdown, tables,
   truncated JSON); then plain statements (`更好的回答是回答1`, `回答2更好`, `选择回答1`);
2. an example (a placeholder reason such as "你的解释", or text introduced by 例如/示例)
   is not a verdict;
3. the candidates must agree; where they do not, an explicit correction (更正, 修正,
   重新检查, …) before the last one makes it the verdict, and anything else is an error.
Text inside a parsed object, or inside any quoted string, is never read as a statement.
"""

from __future__ import annotations

import ast
import json
import re
import warnings

from magistrate.judges.profile import FormatTemplate, JudgeProfile, Reading, packaged_text

KEY = "更好的回答"
REASON = "原因"
# The spellings Con-J's evaluation accepts (most specific first), and a few more.
KEY_SPELLINGS = (
    "更好的回答", "更好回答", "更好得回答", "更好地回答", "better_answer", "better answer",
    "更好答案", "更好得答案", "更好的答案", "更好地答案", "更佳回答", "更佳答案", "更好答",
    "最佳答案", "最佳回答", "更好答 案", "更好 的 回答", "betterAnswer", "更好 的 回应", "更好得回应回答",
    "答案", "回答",
)
_ENGLISH_KEYS = {"betteranswer", "betterresponse", "winner"}
_KEYS = {k.replace(" ", "") for k in KEY_SPELLINGS}
_SIDES = {"1": "A", "2": "B", "１": "A", "２": "B", "一": "A", "二": "B"}
_SIDE = r"0*([12１２一二])(?:\.0)?(?![0-9０-９.])"
# Key spellings specific enough to be read outside JSON ("回答" and "答案" alone are not).
_LINE_KEYS = "|".join(re.escape(k) for k in sorted(KEY_SPELLINGS, key=len, reverse=True) if k not in ("答案", "回答"))
_LINE = re.compile(rf"(?:{_LINE_KEYS})\s*[*\"'“”」]*\s*(?:[:：|]|\n)\s*[#*\"'“”「|\s]*(?:回答|答案|answer|response)?\s*{_SIDE}", re.I)
_STATEMENTS = [re.compile(p, re.I) for p in (
    rf"更好的(?:回答|答案)(?:是|为)[:：]?\s*(?:回答|答案)?\s*{_SIDE}",
    r"更好的(?:回答|答案)(?:是|为)第([一二12])个",
    rf"(?:回答|答案)\s*{_SIDE}\s*(?:更好|更佳|更优|胜出|是更好的(?:回答|答案))",
    r"第([一二])个(?:回答|答案)\s*(?:更好|更佳|更优)",
    rf"选择\s*(?:回答|答案)\s*{_SIDE}",
    rf"better (?:answer|response) is (?:answer|response)\s*{_SIDE}",
    rf"(?:answer|response)\s*{_SIDE} is better",
)]
# A verdict key (quoted or bare) and its value inside an object, for where the side is written.
_VALUE = re.compile(rf"""["'“]?(?:{_LINE_KEYS}|答案|回答|better_?answer|better_?response|winner)\s*[:：]?\s*["'”]?\s*[:：]\s*"""
                    rf"""["'“]?\s*(?:回答|答案|answer|response)?\s*(?:第)?{_SIDE}""", re.I)
_PLACEHOLDERS = {"你的解释", "你的理由", "...", "…", "your explanation"}
_EXAMPLE = re.compile(r"(例如|示例|比如|格式|e\.g\.|for example|example)[^\n]{0,12}$", re.I)
_CORRECTION = re.compile(r"更正|修正|纠正|重新检查|重新考虑|改正|correction|on reflection", re.I)


def _side(value: object) -> str | None:
    """A verdict value as a side: 1, 2, "1", " 2 ", 1.0, "１", "回答2", "第二个回答", "Answer 2"."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return {1: "A", 2: "B"}.get(value) if float(value).is_integer() else None
    match = re.fullmatch(rf"\s*(?:回答|答案|answer|response)?\s*(?:第)?{_SIDE}\s*(?:个(?:回答|答案)?)?\s*", str(value), re.I)
    return _SIDES[match.group(1)] if match else None


def _verdict_key(key: object) -> bool:
    text = str(key).strip().strip("：:“”\"'").replace(" ", "")
    return text in _KEYS or text.lower().replace("_", "") in _ENGLISH_KEYS


def _objects(text: str):
    """(start, end) of every balanced {...} (braces inside double-quoted strings skipped)."""
    stack, in_string, escaped = [], False, False
    for i, char in enumerate(text):
        if in_string:
            escaped, in_string = (False, in_string) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char == "{":
            stack.append(i)
        elif char == "}" and stack:
            yield stack.pop(), i + 1


def _parse(span: str) -> dict | None:
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs if _verdict_key(k)]
        values = {str(v) for k, v in pairs if _verdict_key(k)}
        if len(keys) > 1 and len(values) > 1:
            raise ValueError("conflicting verdict keys")
        return dict(pairs)

    bare_keys = re.sub(r"([{,]\s*)([^\s\"'{}\[\]:：,]+?)\s*[:：]", r'\1"\2":', span)
    for attempt in (span, bare_keys):
        try:
            value = json.loads(attempt, object_pairs_hook=no_duplicates)
        except ValueError as exc:
            if "conflicting" in str(exc):
                return {"_conflict": True}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "\d" in a reason: an invalid escape, kept
                    value = ast.literal_eval(attempt)
            except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                continue
        if isinstance(value, dict):
            return value
    return None


def _find(obj: dict) -> tuple[object, dict] | None:
    """The verdict value and the object holding it (nested objects too)."""
    for key, value in obj.items():
        if _verdict_key(key):
            return value, obj
    for value in obj.values():
        if isinstance(value, dict) and (found := _find(value)):
            return found
    return None


def read_con_j(text: str) -> Reading:
    if not text or not text.strip():
        return Reading(None, error="empty judge output")
    candidates = []  # (position, side or None, the object or None, what the value was, where the side is)
    covered = []
    for start, end in _objects(text):
        obj = _parse(text[start:end])
        if obj is None or any(a <= start and end <= b for a, b in covered):
            continue
        covered = [(a, b) for a, b in covered if not (start <= a and b <= end)] + [(start, end)]
        if obj.get("_conflict"):
            candidates.append((start, "conflict", None, None, None))
            continue
        found = _find(obj)
        if found is None:
            continue
        value, holder = found
        reason = holder.get(REASON, holder.get("reason"))
        example = str(reason).strip() in _PLACEHOLDERS or _EXAMPLE.search(text[max(0, start - 20):start])
        if not example:
            side = _side(value)
            candidates.append((start, side, holder, value, _value_at(text[start:end], side, start)))
    outside = "".join("\0" * (b - a) if any(x <= a < y for x, y in covered) else text[a:b]
                      for a, b in _chunks(text, covered))
    # A statement inside a quoted string (the reason of a cut-off object) is not one.
    unquoted = re.sub(r'"[^"\n]*"?', lambda m: "\0" * len(m.group()), outside)
    for pattern, where in ((_LINE, outside), *((p, unquoted) for p in _STATEMENTS)):
        for match in pattern.finditer(where):
            if not _EXAMPLE.search(where[max(0, match.start() - 20):match.start()]):
                candidates.append((match.start(), _SIDES.get(match.group(1)), _loose(text[:match.start()]),
                                   match.group(1), match.start(1)))
    candidates.sort(key=lambda c: c[0])
    sides = {c[1] for c in candidates if c[1] in ("A", "B")}
    if "conflict" in {c[1] for c in candidates}:
        return Reading(None, rationale=text.strip(), error=f"{KEY} is given twice with different values")
    if not sides:
        invalid = [c for c in candidates if c[1] is None]
        if invalid:
            holder = invalid[-1][2]
            return Reading(None, rationale=_reason(holder) if holder else text.strip(),
                           error=f"{KEY} is {invalid[-1][3]!r}, not 1 or 2")
        return Reading(None, rationale=text.strip(), error=f"no {KEY} (better answer) verdict in judge output")
    decided = [c for c in candidates if c[1] in ("A", "B")]
    last = decided[-1]
    if len(sides) > 1:
        first_other = next(c for c in decided if c[1] != last[1])
        if not _CORRECTION.search(text[first_other[0]:last[0]]):
            return Reading(None, rationale=text.strip(),
                           error="conflicting verdicts (回答1 and 回答2) with no correction: none is taken")
    return Reading(last[1], rationale=None if last[2] is None else _reason(last[2]), label_at=last[4])


def _value_at(span: str, side: str | None, offset: int) -> int | None:
    """Where in the text a parsed object writes its verdict's side (the "1" of
    `"更好的回答": 1`): the last key-colon-value of that side in the object, or None."""
    found = [m.start(1) for m in _VALUE.finditer(span) if _SIDES[m.group(1)] == side]
    return offset + found[-1] if found else None


def _chunks(text: str, covered: list[tuple[int, int]]):
    """The text cut at the edges of the covered spans."""
    edges = sorted({0, len(text), *(e for span in covered for e in span)})
    return zip(edges, edges[1:])


def _loose(before: str) -> dict | None:
    """The reason of a cut-off or malformed object, read from the text before its verdict."""
    match = re.search(rf'"{REASON}"\s*[:：]\s*"(.*?)"\s*[,，]', before)
    return {REASON: match.group(1)} if match else None


def _reason(obj: dict) -> str | None:
    reason = obj.get(REASON, obj.get("reason"))
    return None if reason is None else str(reason)


# The model card's object ends with the verdict key: {"原因": "...", "更好的回答": 1}. Generation
# stops where that object closes; any other shape (the key first, other spellings) is
# written to the token cap and read as before.
_STOP = tuple(f'"{KEY}"{colon}{value}{end}' for colon in (": ", ":") for value in ("1", "2", '"1"', '"2"')
              for end in ("}", "\n}"))


PROFILE = JudgeProfile(
    name="con-j",
    aliases=("conj",),
    version=1,
    description="Con-J pairwise prompt (Chinese) from the model card; JSON verdict with rationale",
    models=("ZiyiYe/Con-J-Qwen2-7B",),
    system="",
    user_template=FormatTemplate(packaged_text("con_j.user.txt")),
    slots={"prompt": "instruction", "a": "output_1", "b": "output_2"},
    read=read_con_j,
    default_mode="generate",
    modes=("generate",),
    labels={"A": "1", "B": "2"},
    max_new_tokens=1024,
    markers=("回答1：", "回答2：", f'"{KEY}"'),
    stop=_STOP,
)
