"""summary.json: the figures of a finished run, read back from what was written."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from magistrate.pipelines.commit import SUMMARY
from magistrate.pipelines.sources import Location
from magistrate.pipelines.units import verdicts_dir

_COLUMNS = ("winner", "consistent", "label", "error", "written_off", "ab_prompt_tokens",
            "ba_prompt_tokens", "ab_completion_tokens", "ba_completion_tokens")


def verdict_files(loc: Location) -> list[str]:
    selector = pafs.FileSelector(verdicts_dir(loc), recursive=True, allow_not_found=True)
    infos = loc.filesystem.get_file_info(selector)
    return sorted(i.path for i in infos if i.is_file and i.path.endswith(".parquet"))


def verdict_dataset(loc: Location, files: list[str]) -> pads.Dataset:
    """All verdict files as one dataset. Units are written independently, so a passthrough
    column of JSONL input can differ between files (absent from some, null-typed where a
    unit held no value, int in one and float in another); Arrow would take the first
    file's schema and fail on, or drop, the others. Read under one schema instead."""
    dataset = pads.dataset(files, filesystem=loc.filesystem, format="parquet")
    schemas = [fragment.physical_schema for fragment in dataset.get_fragments()]
    if all(schema.equals(schemas[0]) for schema in schemas[1:]):
        return dataset
    return pads.dataset(files, filesystem=loc.filesystem, format="parquet", schema=unified_schema(schemas))


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


def _counts(values: pa.Array) -> Counter:
    """Value -> count, nulls left out."""
    return Counter({item["values"].as_py(): item["counts"].as_py()
                    for item in pc.value_counts(values) if item["values"].is_valid})


def _true(mask) -> int:
    return pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0


def summarise(loc: Location, elapsed: float, **extra) -> dict:
    """Counts over the output with Arrow compute, batch by batch: memory does not grow
    with the output and no row passes through Python."""
    files = verdict_files(loc)
    dataset = verdict_dataset(loc, files)
    names = dataset.schema.names
    columns = [c for c in _COLUMNS if c in names]
    winners: Counter = Counter()
    errors: Counter = Counter()
    pairs = consistent = judged_both = labelled = agree = written_off = 0
    tokens = {"prompt": 0, "completion": 0}
    for batch in dataset.to_batches(columns=columns, batch_size=1 << 18):
        pairs += batch.num_rows
        for kind in tokens:
            for order in ("ab", "ba"):
                column = f"{order}_{kind}_tokens"
                if column in batch.schema.names:
                    tokens[kind] += pc.sum(batch.column(column)).as_py() or 0
        winner = batch.column("winner")  # null: a dry run's unjudged pair
        winners.update(_counts(winner))
        failed = pc.equal(winner, "error")
        errors.update(_counts(pc.utf8_slice_codeunits(
            pc.fill_null(pc.filter(batch.column("error"), failed), ""), 0, 80)))
        if "written_off" in batch.schema.names:
            written_off += _true(batch.column("written_off"))
        judged = pc.and_(pc.is_valid(winner), pc.invert(pc.fill_null(failed, False)))
        both = batch.column("consistent")
        judged_both += _true(pc.and_(judged, pc.is_valid(both)))
        consistent += _true(pc.and_(judged, both))
        if "label" in batch.schema.names:
            label = batch.column("label").cast(pa.string())
            has_label = pc.and_(judged, pc.is_in(label, pa.array(["A", "B"])))
            labelled += _true(has_label)
            agree += _true(pc.and_(has_label, pc.equal(winner, label)))
    return {
        "pairs": pairs,
        "winners": {k: winners.get(k, 0) for k in ("A", "B", "tie", "error")},
        "errors": winners.get("error", 0),
        "error_causes": dict(errors.most_common(10)),
        "written_off_rows": written_off,
        "label_agreement": agree / labelled if labelled else None,
        "labelled_pairs": labelled,
        "position_consistency": consistent / judged_both if judged_both else None,
        "prompt_tokens": tokens["prompt"],
        "completion_tokens": tokens["completion"],
        "seconds": round(elapsed, 2),
        "pairs_per_second": round(pairs / elapsed, 3) if elapsed > 0 else None,
        "files": len(files),
        **extra,
    }


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
        ("agreement with labels", f"{pct(summary['label_agreement'])} of {summary['labelled_pairs']}"),
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
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)
