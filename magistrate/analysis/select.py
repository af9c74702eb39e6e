"""DPO pairs from verdicts: prompt / chosen / rejected, as TRL's DPOTrainer reads them.

chosen is the winner's response, rejected the other; a pair is kept when the judge
named a winner (ties and errors are left out), its probability for that winner
(p_a for A, 1 - p_a for B) is at least --min-confidence, and, with --consistent-only, both
orders agreed. With a calibration (--calibration, or the columns of a run judged with
one), that probability is the calibrated `confidence`, and when the calibration has a
decision threshold only `decided` pairs are kept unless decided_only is false
(docs/calibration.md). Written as one Parquet file,
streamed batch by batch.

The file is in one of TRL's two preference forms, since a Parquet column has one type:
conversational (prompt a list of {role, content} messages, chosen and rejected each one
assistant message), which TRL renders with the model's chat template, or standard (three
strings), which TRL tokenises as they are. `auto` picks conversational when any prompt
of the verdicts was chat (a plain prompt then becomes one user message), else standard:
decided on the whole output, so raising --min-confidence never changes the file's schema.
Standard is refused on chat prompts: one string per prompt would mean inventing a chat
template, and TRL would train on that text without the model's own.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from magistrate.analysis.output import Verdicts
from magistrate.judges.calibration import Calibration, apply
from magistrate.pairs import PROMPT_MESSAGES
from magistrate.pipelines import InputError, locate
from magistrate.schema import MESSAGES

_COLUMNS = ("id", "prompt", PROMPT_MESSAGES, "response_a", "response_b", "winner", "p_a", "consistent",
            "ab_p_a", "ba_p_a")
_CALIBRATED = ("confidence", "decided")  # what `judge --calibration` wrote, used without --calibration
DEFAULT_NAME = "dpo.parquet"
FORMATS = ("auto", "conversational", "standard")


def dpo_schema(conversational: bool) -> pa.Schema:
    text = MESSAGES if conversational else pa.string()
    return pa.schema([("id", pa.string()), ("prompt", text), ("chosen", text), ("rejected", text),
                      ("confidence", pa.float64())])


def _has_chat_prompts(verdicts: Verdicts) -> bool:
    """Whether any verdict's prompt was chat messages; stops at the first batch holding one."""
    if PROMPT_MESSAGES not in verdicts.columns:
        return False
    batches = verdicts.dataset.to_batches(columns=[PROMPT_MESSAGES])
    return any(b.column(0).null_count < b.num_rows for b in batches)


def _conversational(verdicts: Verdicts, form: str) -> bool:
    if form not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {form!r}")
    chat = _has_chat_prompts(verdicts)
    if form == "standard" and chat:
        raise InputError(f"{verdicts.loc.uri}: its prompts are chat messages, which the standard form "
                         "could hold only rendered with some chat template, and TRL would train on that "
                         "text as it is; use --format conversational (what the default, auto, gives "
                         "here): TRL renders it with the model's own chat template")
    return chat if form == "auto" else form == "conversational"


def _pair(row: dict, conversational: bool) -> tuple:
    """(prompt, chosen, rejected) of a kept row, in the file's form."""
    a, b = row["response_a"], row["response_b"]
    chosen, rejected = (a, b) if row["winner"] == "A" else (b, a)
    if not conversational:
        return row["prompt"], chosen, rejected
    prompt = row[PROMPT_MESSAGES] or [{"role": "user", "content": row["prompt"]}]
    return prompt, [{"role": "assistant", "content": chosen}], [{"role": "assistant", "content": rejected}]


def _calibrated(rows: dict[str, list], calibration: Calibration | None, decided_only: bool) -> None:
    """Sets each row's `confidence` (calibrated) and `undecided` in the batch: from the
    calibration given, else from the columns a calibrated run wrote (`judge --calibration`),
    else none."""
    if calibration is not None:
        _, confidence, decided = apply(calibration, rows["ab_p_a"], rows["ba_p_a"], rows["p_a"], rows["winner"])
        rows["confidence"] = [None if c != c else float(c) for c in confidence]  # NaN: no confidence
        decided = None if decided is None else decided.tolist()
    else:
        rows.setdefault("confidence", [None] * len(rows["id"]))
        decided = rows.pop("decided", None)
        if decided is not None and all(d is None for d in decided):
            decided = None  # a calibration without a decision block
    rows["undecided"] = ([False] * len(rows["id"]) if decided is None or not decided_only
                         else [not d for d in decided])


def _reason(row: dict, min_confidence: float, consistent_only: bool) -> tuple[str, float | None]:
    """Why a row is left out ("" when kept), and the winner's probability (calibrated, with
    a calibration)."""
    winner = row["winner"]
    if winner not in ("A", "B"):
        return {"tie": "tie", "error": "error"}.get(winner, "unjudged"), None
    if row["p_a"] is None:
        return "no p_a", None
    confidence = row["confidence"]
    if confidence is None:
        confidence = row["p_a"] if winner == "A" else 1.0 - row["p_a"]
    if row["undecided"]:
        return "undecided", confidence
    if confidence < min_confidence:
        return "below min confidence", confidence
    if consistent_only and row["consistent"] is not True:
        return "orders disagree or one order", confidence
    return "", confidence


def select_pairs(verdicts: Verdicts, output: str, min_confidence: float, consistent_only: bool = False,
                 endpoint_url: str | None = None, form: str = "auto", calibration: Calibration | None = None,
                 decided_only: bool = True) -> dict:
    """Writes the DPO file; returns where, in which form, how many pairs were kept and why
    others were not."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"--min-confidence must be between 0 and 1, not {min_confidence}")
    verdicts.require(("prompt", "response_a", "response_b", "p_a"), "DPO selection")
    conversational = _conversational(verdicts, form)
    schema = dpo_schema(conversational)
    out = locate(output, endpoint_url)
    path = out.path if out.path.endswith(".parquet") else f"{out.path.rstrip('/')}/{DEFAULT_NAME}"
    parent = path.rsplit("/", 1)[0]
    if parent:
        out.filesystem.create_dir(parent, recursive=True)
    left_out: Counter = Counter()
    kept = 0
    with out.filesystem.open_output_stream(path) as stream, pq.ParquetWriter(stream, schema) as writer:
        stored = () if calibration is not None else tuple(c for c in _CALIBRATED if c in verdicts.columns)
        for rows in verdicts.batches(_COLUMNS + stored):
            _calibrated(rows, calibration, decided_only)
            chosen: dict[str, list] = {name: [] for name in schema.names}
            for values in zip(*rows.values()):
                row = dict(zip(rows, values))
                reason, confidence = _reason(row, min_confidence, consistent_only)
                if reason:
                    left_out[reason] += 1
                    continue
                chosen["id"].append(row["id"])
                for name, value in zip(("prompt", "chosen", "rejected"), _pair(row, conversational)):
                    chosen[name].append(value)
                chosen["confidence"].append(confidence)
            kept += len(chosen["id"])
            writer.write_table(pa.table(chosen, schema=schema))
    uri = output if output.endswith(".parquet") else f"{output.rstrip('/')}/{DEFAULT_NAME}"
    return {"output": uri, "format": "conversational" if conversational else "standard", "pairs": kept,
            "left_out": dict(left_out.most_common())}
