"""Con-J-Qwen2-7B: the model card's Chinese prompt, an empty system message, the Qwen2
chat template; the judge writes JSON {"原因": ..., "更好的回答": 1|2}.

The reader is as tolerant as the model's own evaluation code (Con-J
src/evaluation/evaluate_utils.py and RewardBench's con_j_evaluate): code-fenced JSON,
the whole text as JSON, every {...} from first to last, then the key spellings the
authors accept followed by 1 or 2 (full-width digits too). What none of these finds is
an error carrying the raw text, never a guess.
"""

from __future__ import annotations

import json
import re

from magistrate.judges.profile import FormatTemplate, JudgeProfile, Reading, packaged_text

KEY = "更好的回答"
REASON = "原因"
# The spellings Con-J's evaluation accepts, in its order (most specific first).
KEY_SPELLINGS = (
    "更好的回答", "更好回答", "更好得回答", "更好地回答", "better_answer", "better answer",
    "更好答案", "更好得答案", "更好的答案", "更好地答案", "更佳回答", "更佳答案", "更好答",
    "最佳答案", "更好答 案", "更好 的 回答", "betterAnswer", "更好 的 回应", "更好得回应回答",
    "答案", "回答",
)
_DIGITS = {"1": "A", "2": "B", "１": "A", "２": "B"}


def _verdict(value: object) -> str | None:
    text = str(value).strip()
    return _DIGITS.get(text)


def _json_objects(text: str):
    for block in re.findall(r"```json(.*?)```", text, re.DOTALL):
        yield block
    yield text
    for block in re.findall(r"\{.*?\}", text, re.DOTALL):
        yield block


def read_con_j(text: str) -> Reading:
    if not text or not text.strip():
        return Reading(None, error="empty judge output")
    flat = text.replace("\n", " ").strip()
    for candidate in _json_objects(flat):
        try:
            obj = json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict) and KEY in obj:
            verdict = _verdict(obj[KEY])
            if verdict is None:
                return Reading(None, rationale=_reason(obj),
                               error=f"{KEY} is {obj[KEY]!r}, not 1 or 2")
            return Reading(verdict, rationale=_reason(obj))
    # Truncated or malformed JSON: the key spellings the authors' evaluation accepts.
    for key in KEY_SPELLINGS:
        if key not in flat:
            continue
        match = re.search(rf'"{re.escape(key)}"\s*:\s*"?\s*([12１２])', flat)
        if match:
            return Reading(_DIGITS[match.group(1)], rationale=_loose_reason(flat))
    return Reading(None, error="no 更好的回答 (better answer) verdict in judge output")


def _reason(obj: dict) -> str | None:
    reason = obj.get(REASON)
    return None if reason is None else str(reason)


def _loose_reason(text: str) -> str | None:
    match = re.search(rf'"{REASON}"\s*:\s*"(.*?)"\s*,', text)
    return match.group(1) if match else None


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
)
