"""DPO pairs from verdicts: prompt / chosen / rejected, as TRL's DPOTrainer reads them.

chosen is the winner's response, rejected the other; a pair is kept when the judge
named a winner (ties and errors are left out), its probability for that winner
(p_a for A, 1 - p_a for B) is at least --min-confidence, and, with --consistent-only, both
orders agreed. With a calibration (--calibration, or the columns of a run judged with
one), that probability is the calibrated `confidence`, and when the calibration has a
decision threshold only `decided` pairs are kept unless decided_only is false
(docs/calibration.md). Written as one Parquet file, streamed batch by batch into a file off
to the side (beside the target, hidden; for S3 in $TMPDIR) and published in one step when
complete: a rename, or one upload. Ctrl-C, a read error or a damaged unit leaves no file
under the target's name, or the earlier one as it was; an existing target is replaced only
with overwrite.

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
from typing import Callable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from magistrate.analysis.output import Verdicts
from magistrate.judges.calibration import Calibration, apply
from magistrate.pairs import PROMPT_MESSAGES
from magistrate.pipelines import AlreadyExists, InputError, locate, publish_file, staged_file
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
    return any(t.column(0).null_count < t.num_rows for t in verdicts.unit_tables((PROMPT_MESSAGES,)))


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
                 decided_only: bool = True, overwrite: bool = False,
                 warn: Callable[[str], object] | None = None) -> dict:
    """Writes the DPO file, whole or not at all; returns where, in which form, how many
    pairs were kept and why others were not. An existing file is refused unless
    `overwrite`. Once nothing is refused, `warn` is told what an output without _SUCCESS
    is known to miss."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"--min-confidence must be between 0 and 1, not {min_confidence}")
    out = locate(output, endpoint_url)
    named = output.endswith(".parquet")
    path = out.path if named else f"{out.path.rstrip('/')}/{DEFAULT_NAME}"
    uri = output if named else f"{output.rstrip('/')}/{DEFAULT_NAME}"
    refusal = f"{uri} exists; select replaces it only with --overwrite"
    found = out.filesystem.get_file_info(path).type
    if found == pafs.FileType.Directory:
        raise InputError(f"{uri} is a directory; give a file name ending in .parquet, or the directory's parent")
    if found != pafs.FileType.NotFound and not overwrite:
        raise InputError(refusal)
    verdicts.require(("prompt", "response_a", "response_b", "p_a"), "DPO selection")
    conversational = _conversational(verdicts, form)
    schema = dpo_schema(conversational)
    incomplete = warn and verdicts.incomplete()
    if incomplete:
        warn(incomplete)
    with staged_file(out, path) as staging:
        try:
            with pq.ParquetWriter(staging, schema) as writer:
                kept, left_out = _write(verdicts, writer, schema, conversational, min_confidence, consistent_only,
                                        calibration, decided_only)
        except InputError as exc:  # a damaged unit, a failed read from S3: the file named
            raise InputError(f"{uri} was not written (nothing there changed): {exc}") from None
        except OSError as exc:  # writing the file off to the side (a full disk)
            raise InputError(f"{uri} was not written (nothing there changed): {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())}") from None
        try:
            publish_file(out, staging, path, overwrite=overwrite)
        except AlreadyExists:
            raise InputError(f"{refusal} (it appeared while select ran)") from None
    return {"output": uri, "format": "conversational" if conversational else "standard", "pairs": kept,
            "left_out": dict(left_out.most_common())}


def _write(verdicts: Verdicts, writer: pq.ParquetWriter, schema: pa.Schema, conversational: bool,
           min_confidence: float, consistent_only: bool, calibration: Calibration | None,
           decided_only: bool) -> tuple[int, Counter]:
    """The kept pairs into `writer`, batch by batch; how many, and the others by reason."""
    left_out: Counter = Counter()
    kept = 0
    stored = () if calibration is not None else tuple(c for c in _CALIBRATED if c in verdicts.columns)
    for table in verdicts.unit_tables(_COLUMNS + stored):  # no reads left in flight if this stops
        rows = table.to_pydict()
        for name in _COLUMNS + stored:
            rows.setdefault(name, [None] * table.num_rows)
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
    return kept, left_out
