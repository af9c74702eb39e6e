"""The end of a big run: the summary and the reconciliation over a synthetic output of
10M verdict rows (unit files of 2048 rows, as `magistrate judge` writes them), timed, with
the peak memory of the process that does it (the driver's work at the end of a job).

    .venv/bin/python -m benchmarks.summary_scale [--rows 10000000] [--unit-rows 2048]

Prints one JSON line: the rows, files, seconds for the footers (unit_files + reconcile)
and for summarise, and the peak RSS in MiB."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.common import run_measured


def _template(rows: int, seed: int = 0) -> pa.Table:
    """One unit's verdict rows with plausible values (both orders, logprob mode, labels)."""
    from magistrate.schema import VERDICT_FIELDS

    rng = np.random.default_rng(seed)
    p_ab, p_ba = rng.random(rows), rng.random(rows)
    verdict = lambda p: pa.array(np.where(p > 0.5, "A", "B"))  # noqa: E731
    columns = {
        "id": pa.array([f"x{i}" for i in range(rows)]),
        "label": pa.array(np.where(rng.random(rows) > 0.5, "A", "B")),
        "winner": pa.array(np.where((p_ab > 0.5) & (p_ba > 0.5), "A",
                                    np.where((p_ab <= 0.5) & (p_ba <= 0.5), "B", "tie"))),
        "p_a": pa.array((p_ab + p_ba) / 2),
        "consistent": pa.array((p_ab > 0.5) == (p_ba > 0.5)),
        "written_off": pa.array(np.zeros(rows, dtype=bool)),
        "ab_verdict": verdict(p_ab), "ba_verdict": verdict(p_ba),
        "ab_p_a": pa.array(p_ab), "ba_p_a": pa.array(p_ba),
        "ab_prompt_tokens": pa.array(rng.integers(200, 2000, rows)),
        "ba_prompt_tokens": pa.array(rng.integers(200, 2000, rows)),
        "ab_completion_tokens": pa.array(np.zeros(rows, dtype=np.int64)),
        "ba_completion_tokens": pa.array(np.zeros(rows, dtype=np.int64)),
    }
    fields = [pa.field("id", pa.string()), pa.field("label", pa.string())] + list(VERDICT_FIELDS)
    arrays = [columns.get(f.name, pa.nulls(rows, f.type)) for f in fields]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_output(out: Path, rows: int, unit_rows: int) -> int:
    """Unit files through magistrate's own publish(); returns the file count."""
    from magistrate.pipelines.sources import locate
    from magistrate.pipelines.units import publish

    loc = locate(str(out))
    template = _template(unit_rows)
    files = 0
    for start in range(0, rows, unit_rows):
        n = min(unit_rows, rows - start)
        table = template.slice(0, n).set_column(0, "id", pa.array([f"p{i}" for i in range(start, start + n)]))
        publish(loc, f"unit-{files:08d}", table, planned_rows=n, metadata={"run_id": "bench"})
        files += 1
    return files


def measure(out: Path) -> dict:
    from magistrate.pipelines.commit import reconcile
    from magistrate.pipelines.sources import locate
    from magistrate.pipelines.summary import summarise
    from magistrate.pipelines.units import Unit, unit_files

    loc = locate(str(out))
    started = time.monotonic()
    files = unit_files(loc)
    units = [Unit(unit_id, "x", "json", 0, 0, f.planned) for unit_id, f in files.items()]
    rec = reconcile(units, files)
    footers = time.monotonic() - started
    started = time.monotonic()
    summary = summarise(loc, 1.0)
    figures = time.monotonic() - started
    return {"rows": summary["pairs"], "files": summary["files"], "complete": rec.complete,
            "footers_s": round(footers, 2), "summarise_s": round(figures, 2),
            "rows_per_s": round(summary["pairs"] / (figures + footers))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--unit-rows", type=int, default=2048)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the measured child
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure))))
        return
    work = Path(tempfile.mkdtemp(prefix="magistrate-summary-"))
    try:
        started = time.monotonic()
        files = write_output(work / "out", args.rows, args.unit_rows)
        written = time.monotonic() - started
        peak, seconds, out = run_measured([sys.executable, "-m", "benchmarks.summary_scale",
                                           "--measure", str(work / "out")])
        result = json.loads(out.strip().splitlines()[-1])
        result.update(written_files=files, write_s=round(written, 1), peak_rss_mib=round(peak),
                      process_s=round(seconds, 1))
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
