"""summary.json: the figures of a finished run, read back from what was written."""

from __future__ import annotations

import json
import os
import re
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from magistrate.pipelines.commit import SUMMARY
from magistrate.pipelines.sources import Location
from magistrate.pipelines.store import map_files
from magistrate.pipelines.units import read_verified, verdicts_dir

_COLUMNS = ("winner", "p_a", "ab_verdict", "ba_verdict", "consistent", "label", "error", "written_off",
            "injection_suspect", "decided", "ab_prompt_tokens", "ba_prompt_tokens", "ab_completion_tokens",
            "ba_completion_tokens")


def verdict_files(loc: Location) -> list[str]:
    selector = pafs.FileSelector(verdicts_dir(loc), recursive=True, allow_not_found=True)
    infos = loc.filesystem.get_file_info(selector)
    return sorted(i.path for i in infos if i.is_file and i.path.endswith(".parquet"))


def verdict_dataset(loc: Location, files: list[str]) -> pads.Dataset:
    """All verdict files as one dataset. Units are written independently, so a passthrough
    column of JSONL input can differ between files (absent from some, null-typed where a
    unit held no value, int in one and float in another); Arrow would take the first
    file's schema and fail on, or drop, the others. Read under one schema instead."""
    distinct = _distinct_schemas(loc, files)
    schema = distinct[0] if len(distinct) == 1 else unified_schema(distinct)
    return pads.dataset(files, filesystem=loc.filesystem, format="parquet", schema=schema)


def _distinct_schemas(loc: Location, files: list[str]) -> list[pa.Schema]:
    """The files' schemas, each kind once. Read footer by footer and dropped: a dataset
    that inspects its fragments keeps every footer (~70 KB per unit file, 4 GB at 100M
    rows; docs/performance.md)."""
    def schema(path: str) -> pa.Schema:
        with loc.filesystem.open_input_file(path) as f:
            return pq.read_schema(f).remove_metadata()

    distinct: list[pa.Schema] = []
    for found in map_files(loc, schema, files):
        if not any(found.equals(known) for known in distinct):
            distinct.append(found)
    return distinct


def unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """Arrow's permissive promotion (null -> any type, int -> float, ...), and text for a
    column whose types cannot be promoted (int in one file, string in another)."""
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    types: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for field in schema:
            types.setdefault(field.name, []).append(field.type)
    fields = []
    for name, kinds in types.items():
        try:
            fields.append(pa.unify_schemas([pa.schema([(name, kind)]) for kind in kinds],
                                           promote_options="permissive").field(0))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


# An error's cause is its kind: the message without the row's place and the order, up to
# its first ": " or " (", figures as N. The counters then hold kinds of error, not one
# entry per error row, and causes read alike in summary.json, the report and estimate.
_PLACE = r"^(?:(?:line|row) \d+ of .+?|the line at byte \d+ of .+?): "
_ORDER = r"^order (?:ab|ba): "
_DETAIL = r": | \("


def error_cause(message: str) -> str:
    """The kind of one error message (the same rule as error_causes, for Python values)."""
    text = re.sub(_ORDER, "", re.sub(_PLACE, "", message or ""))
    return re.sub(r"\d+", "N", re.split(_DETAIL, text, maxsplit=1)[0])[:80]


def error_causes(messages: pa.Array) -> pa.Array:
    """error_cause over an Arrow array of messages."""
    text = pc.replace_substring_regex(pc.replace_substring_regex(messages, _PLACE, ""), _ORDER, "")
    head = pc.list_element(pc.split_pattern_regex(text, _DETAIL, max_splits=1), 0)
    return pc.utf8_slice_codeunits(pc.replace_substring_regex(head, r"\d+", "N"), 0, 80)


def _counts(values: pa.Array) -> Counter:
    """Value -> count, nulls left out."""
    return Counter({item["values"].as_py(): item["counts"].as_py()
                    for item in pc.value_counts(values) if item["values"].is_valid})


def _true(mask) -> int:
    return pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0


def _file_figures(loc: Location, path: str) -> Counter:
    """One verdict file's counts, with Arrow compute: no row passes through Python, and
    nothing of the file (its footer included) outlives the call."""
    figures: Counter = Counter()
    try:
        with loc.filesystem.open_input_file(path) as f:
            # A unit file holds one unit (--unit-rows), so it is read whole: every page, so
            # that a damaged one fails its checksum here.
            table = read_verified(f)
    except (OSError, pa.ArrowException):
        figures[("damaged", os.path.basename(path)[: -len(".parquet")])] += 1
        return figures
    _add_batch(figures, table.select([c for c in _COLUMNS if c in table.column_names]))
    return figures


def _add_batch(figures: Counter, batch: pa.Table) -> None:
    names = batch.schema.names
    figures["pairs"] += batch.num_rows
    for kind in ("prompt", "completion"):
        for order in ("ab", "ba"):
            if f"{order}_{kind}_tokens" in names:
                figures[f"{kind}_tokens"] += pc.sum(batch.column(f"{order}_{kind}_tokens")).as_py() or 0
    winner = batch.column("winner")  # null: a dry run's unjudged pair
    figures.update({("winner", k): n for k, n in _counts(winner).items()})
    failed = pc.equal(winner, "error")
    figures.update({("cause", k): n for k, n in _counts(error_causes(
        pc.fill_null(pc.filter(batch.column("error"), failed), ""))).items()})
    if "written_off" in names:
        figures["written_off"] += _true(batch.column("written_off"))
    if "injection_suspect" in names:
        figures["injection_suspects"] += _true(batch.column("injection_suspect"))
    judged = pc.and_(pc.is_valid(winner), pc.invert(pc.fill_null(failed, False)))
    both = batch.column("consistent")
    figures["judged_both"] += _true(pc.and_(judged, pc.is_valid(both)))
    figures["consistent"] += _true(pc.and_(judged, both))
    figures["judged"] += _true(judged)
    figures["ties"] += _true(pc.and_(judged, pc.equal(winner, "tie")))
    # Position bias: each order's verdict, in the original frame, against the slot shown
    # first (A in order ab, B in order ba).
    for order, first in (("ab", "A"), ("ba", "B")):
        if f"{order}_verdict" in names:
            verdict = batch.column(f"{order}_verdict")
            decisive = pc.and_(judged, pc.is_in(verdict, pa.array(["A", "B"])))
            figures["decisive_orders"] += _true(decisive)
            figures["first_slot"] += _true(pc.and_(decisive, pc.equal(verdict, first)))
    if "decided" in names:  # a calibrated run (--calibration): decisions with a guarantee
        sure = pc.and_(judged, pc.fill_null(batch.column("decided"), False))
        figures["calibrated_rows"] += _true(pc.is_valid(batch.column("decided")))
        figures["sure"] += _true(sure)
        if "label" in names:
            label = batch.column("label").cast(pa.string())
            sure_labelled = pc.and_(sure, pc.is_in(label, pa.array(["A", "B"])))
            figures["sure_labelled"] += _true(sure_labelled)
            figures["sure_agree"] += _true(pc.and_(sure_labelled, pc.equal(winner, label)))
    if "label" in names:
        label = batch.column("label").cast(pa.string())
        has_label = pc.and_(judged, pc.is_in(label, pa.array(["A", "B"])))
        figures["labelled"] += _true(has_label)
        figures["agree"] += _true(pc.and_(has_label, pc.equal(winner, label)))
        decided = pc.and_(has_label, pc.is_in(winner, pa.array(["A", "B"])))
        figures["decided"] += _true(decided)
        figures["decided_agree"] += _true(pc.and_(decided, pc.equal(winner, label)))
        if "p_a" in names:  # what both orders say together: which side p_a leans to
            p_a = batch.column("p_a")
            leans = pc.and_(has_label, pc.not_equal(p_a, 0.5))
            figures["p_a_leaning"] += _true(leans)
            figures["p_a_agree"] += _true(pc.and_(leans, pc.equal(pc.greater(p_a, 0.5), pc.equal(label, "A"))))


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def summarise(loc: Location, elapsed: float, **extra) -> dict:
    """Counts over the output, file by file, so memory does not grow with the output."""
    files = verdict_files(loc)
    total: Counter = Counter()
    for figures in map_files(loc, lambda path: _file_figures(loc, path), files):
        total.update(figures)
    winners = {k: total[("winner", k)] for k in ("A", "B", "tie", "error")}
    causes = Counter({k[1]: n for k, n in total.items() if isinstance(k, tuple) and k[0] == "cause"})
    damaged = sorted(k[1] for k in total if isinstance(k, tuple) and k[0] == "damaged")
    return {
        "damaged_units": damaged,  # unit files that fail their checksums: missing, judged again on --resume
        "pairs": total["pairs"],
        "winners": winners,
        "errors": winners["error"],
        "error_causes": dict(causes.most_common(50)),
        "written_off_rows": total["written_off"],
        "injection_suspects": total["injection_suspects"],
        "label_agreement": total["agree"] / total["labelled"] if total["labelled"] else None,
        "labelled_pairs": total["labelled"],
        "decided_agreement": _share(total["decided_agree"], total["decided"]),
        "decided_pairs": total["decided"],
        "tie_share": _share(total["ties"], total["judged"]),
        "p_a_agreement": _share(total["p_a_agree"], total["p_a_leaning"]),
        "p_a_pairs": total["p_a_leaning"],
        "position_bias": _share(total["first_slot"], total["decisive_orders"]),
        "decisive_orders": total["decisive_orders"],
        "position_consistency": total["consistent"] / total["judged_both"] if total["judged_both"] else None,
        "prompt_tokens": total["prompt_tokens"],
        "completion_tokens": total["completion_tokens"],
        "seconds": round(elapsed, 2),
        "pairs_per_second": round(total["pairs"] / elapsed, 3) if elapsed > 0 else None,
        "files": len(files),
        **({"calibrated": calibrated_figures(total)} if total["calibrated_rows"] else {}),
        **extra,
    }


def calibrated_figures(total: Counter) -> dict:
    """A calibrated run's decisions: how many judged pairs are decided (confidence at or
    above the calibration's threshold), and how those agree with labels where rows have them."""
    return {"decided": total["sure"], "coverage": _share(total["sure"], total["judged"]),
            "labelled_decided": total["sure_labelled"],
            "agreement_on_decided": _share(total["sure_agree"], total["sure_labelled"])}


def read_summary(loc: Location) -> dict | None:
    """The output's summary.json, or None when there is none."""
    path = f"{loc.path.rstrip('/')}/{SUMMARY}"
    if loc.filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with loc.filesystem.open_input_stream(path) as stream:
        return json.loads(stream.read())


def _this_run(summary: dict) -> str:
    run = summary.get("this_run", {})
    text = (f"{run.get('pairs', 0)} pairs judged in {run.get('units', 0)} units; "
            f"{summary.get('units_skipped', 0)} of {summary.get('units', 0)} units already done")
    if run.get("failed_units"):
        text += f"; {run['failed_units']} units failed every round (written off)"
    return text


def _output_state(summary: dict) -> str:
    if summary.get("complete"):
        return "complete (_SUCCESS written)"
    parts = []
    if summary.get("written_off_rows"):
        parts.append(f"{summary['written_off_rows']} rows written off (engine or actor failures)")
    if summary.get("missing_unit_count"):
        parts.append(f"{summary['missing_unit_count']} units missing")
    return "INCOMPLETE: " + ("; ".join(parts) or "rows written differ from rows planned") + \
        "; rerun with --resume to judge them"


def summary_table(summary: dict) -> str:
    """The short table printed at the end of a run."""
    w = summary["winners"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    rows = [
        ("pairs", str(summary["pairs"])),
        ("winners A / B / tie", f"{w['A']} / {w['B']} / {w['tie']}"),
        ("errors", str(w["error"])),
        ("injection suspects", str(summary.get("injection_suspects", 0))),
        ("agreement with labels", f"{pct(summary['label_agreement'])} of {summary['labelled_pairs']} "
                                  "(a tie counts as a miss)"),
    ]
    if summary.get("labelled_pairs") and "decided_agreement" in summary:  # older summaries lack them
        rows += [
            ("  over decided pairs", f"{pct(summary['decided_agreement'])} of {summary['decided_pairs']}; "
                                     f"ties {pct(summary['tie_share'])} of judged pairs"),
            ("  by order-averaged p_a", f"{pct(summary['p_a_agreement'])} of {summary['p_a_pairs']} "
                                        "(the side both orders lean to together)"),
        ]
    if cal := summary.get("calibrated"):
        text = f"{cal['decided']} of {summary['pairs']} pairs ({pct(cal['coverage'])} of judged)"
        if cal["labelled_decided"]:
            text += f"; agreement with labels {pct(cal['agreement_on_decided'])} of {cal['labelled_decided']}"
        rows.append(("decided (calibrated)", text))
    if summary.get("decisive_orders"):
        rows.append(("position bias", f"{pct(summary['position_bias'])} of {summary['decisive_orders']} decisive "
                                      "orders prefer the first slot (50% = none)"))
    rows += [
        ("position consistency", pct(summary["position_consistency"])),
        ("tokens: prompt / completion", f"{summary['prompt_tokens']} / {summary['completion_tokens']}"),
        ("this run", _this_run(summary)),
        ("pairs/s", str(summary["pairs_per_second"])),
        ("wall time", f"{summary['seconds']} s"),
    ]
    if "complete" in summary:
        rows.append(("output", _output_state(summary)))
    if "estimate" in summary:
        e = summary["estimate"]
        rows.append((f"estimate on {e['gpu']}", f"{e['gpu_hours']:.3g} GPU-hours "
                     f"({e['parameters'] / 1e9:.3g}B parameters; {e['assumptions']})"))
    if summary.get("embedded_judge") and "estimate" not in summary:
        rows.append(("note", "the embedded 135M judge is weak: it mostly prefers the first slot, so both orders "
                             "mostly say tie and agreement is near chance. These figures show the pipeline "
                             "works, not a judge's quality; pass --model for a real judge"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def cascade_table(summary: dict) -> str:
    """One line per stage of a cascade: what it judged, decided and passed on, and its cost."""
    lines = []
    for k, stage in enumerate(summary.get("stages", []), start=1):
        estimate = next((f"{v:.3g} GPU-hours on {key.rsplit('_', 1)[1]} (estimate)"
                         for key, v in stage.items() if key.startswith("gpu_hours_estimate_")), "")
        lines.append(f"  stage {k} {stage['name']} ({stage['judge']}, {stage['mode']}, order {stage['order']}): "
                     f"{stage['pairs']} pairs, {stage['decided']} decided, {stage['escalated']} escalated; "
                     f"tokens {stage['prompt_tokens']} / {stage['completion_tokens']}; {estimate}")
    if summary.get("decided_by"):
        lines.append("  decided by: " + ", ".join(f"{name} {n}" for name, n in summary["decided_by"].items()))
    return "\n".join(lines)
