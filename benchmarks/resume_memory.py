"""Resume over an output of 1M finished rows (written by a dry run): the resumed run
lists unit names only, so its driver memory does not grow with the finished rows.

    .venv/bin/python -m benchmarks.resume_memory [--rows 1000000]

Prints the driver's peak RSS for the dry run that writes the rows and for the resume,
which finds one unit missing (as after a run killed before its last unit) and judges only
that unit."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.common import HERE, run_measured, synthetic_pairs

MAGISTRATE = [sys.executable, "-m", "magistrate.cli", "judge"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--replicas", default="2")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="magistrate-resume-"))
    inputs, out = work / "in", work / "out"
    inputs.mkdir()
    pq.write_table(synthetic_pairs(0, args.rows), inputs / "part-0.parquet", row_group_size=2048)
    common = ["--output", str(out), "--judge", str(HERE / "short_judge.yaml"), "--order", "ab",
              "--dry-run", "--replicas", args.replicas, "--batch-size", "2048"]
    first_peak, first_s, _ = run_measured([*MAGISTRATE, "--input", str(inputs), *common])
    units_done = len(list((out / "verdicts").glob("unit-*.parquet")))

    # A run killed before its last unit: that unit's file was never published.
    sorted((out / "verdicts").glob("unit-*.parquet"))[-1].unlink()
    peak, seconds, _ = run_measured([*MAGISTRATE, "--input", str(inputs), "--resume", *common])
    summary = json.loads((out / "summary.json").read_text())
    print(json.dumps({
        "finished_rows": args.rows, "finished_units": units_done,
        "dry_run": {"driver_peak_rss_mib": round(first_peak), "seconds": round(first_s, 1)},
        "resume": {"driver_peak_rss_mib": round(peak), "seconds": round(seconds, 1),
                   "units_skipped": summary["units_skipped"],
                   "pairs_judged": summary["this_run"]["pairs"]},
        "output_rows": summary["pairs"],
    }, indent=2))


if __name__ == "__main__":
    main()
