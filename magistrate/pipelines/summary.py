"""summary.json: the figures of a finished run, read back from what was written."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from magistrate.pipelines.sources import Location
from magistrate.pipelines.units import verdicts_dir

SUMMARY = "summary.json"
_COLUMNS = ("id", "winner", "consistent", "label", "error", "ab_prompt_tokens",
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


def summarise(loc: Location, elapsed: float, **extra) -> dict:
    """Counts over the output, streamed batch by batch (memory does not grow with it)."""
    files = verdict_files(loc)
    dataset = verdict_dataset(loc, files)
    columns = [c for c in _COLUMNS if c in dataset.schema.names]
    winners: Counter = Counter()
    errors: Counter = Counter()
    pairs = consistent = judged_both = labelled = agree = 0
    tokens = {"prompt": 0, "completion": 0}
    for batch in dataset.to_batches(columns=columns):
        for kind in tokens:
            for order in ("ab", "ba"):
                column = f"{order}_{kind}_tokens"
                if column in batch.schema.names:
                    tokens[kind] += pc.sum(batch.column(column)).as_py() or 0
        rows = batch.to_pydict()
        n = batch.num_rows
        pairs += n
        for i in range(n):
            winner = rows["winner"][i]
            if winner is None:  # a dry run's unjudged pair
                continue
            winners[winner] += 1
            if winner == "error":
                errors[(rows["error"][i] or "")[:80]] += 1
                continue
            if rows["consistent"][i] is not None:
                judged_both += 1
                consistent += bool(rows["consistent"][i])
            label = rows.get("label", [None] * n)[i]
            if label in ("A", "B"):
                labelled += 1
                agree += winner == label
    return {
        "pairs": pairs,
        "winners": {k: winners.get(k, 0) for k in ("A", "B", "tie", "error")},
        "errors": winners.get("error", 0),
        "error_causes": dict(errors.most_common(10)),
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


def write_summary(loc: Location, summary: dict) -> None:
    with loc.filesystem.open_output_stream(f"{loc.path.rstrip('/')}/{SUMMARY}") as stream:
        stream.write(json.dumps(summary, indent=2, sort_keys=True).encode())


def _this_run(summary: dict) -> str:
    run = summary.get("this_run", {})
    text = (f"{run.get('pairs', 0)} pairs judged in {run.get('units', 0)} units; "
            f"{summary.get('units_skipped', 0)} of {summary.get('units', 0)} units already done")
    if run.get("failed_units"):
        text += f"; {run['failed_units']} units failed every try (their pairs are error rows)"
    return text


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
    if "estimate" in summary:
        e = summary["estimate"]
        rows.append((f"estimate on {e['gpu']}", f"{e['gpu_hours']:.3g} GPU-hours "
                     f"({e['parameters'] / 1e9:.3g}B parameters; {e['assumptions']})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)
