"""`magistrate report`, `magistrate leaderboard`, `magistrate select` and `magistrate calibrate`:
thin wrappers over magistrate.analysis (docs/analysis.md, docs/calibration.md); and
`magistrate verify`, over pipelines/verify.py (docs/reliability.md). Registered on the main
group in cli.py."""

from __future__ import annotations

import json
import sys

import click

from magistrate.analysis.bradley_terry import battles_from, leaderboard as fit_leaderboard
from magistrate.analysis.calibrate import FOLDS, calibrate_output, calibrated_figures
from magistrate.analysis.guarantee import MIN_PAIRS
from magistrate.analysis.figures import compute_figures
from magistrate.analysis.html import report_html
from magistrate.analysis.output import open_verdicts
from magistrate.analysis.select import FORMATS, select_pairs
from magistrate.analysis.terminal import calibration_text, leaderboard_text, report_text
from magistrate.cli.options import CALIBRATION, ENDPOINT
from magistrate.pipelines.sources import locate, read_calibration
from magistrate.pipelines.store import write_whole


def _write_text(uri: str, text: str, endpoint_url: str | None) -> None:
    loc = locate(uri, endpoint_url)
    write_whole(loc, loc.path, text.encode("utf-8"))


@click.command()
@click.argument("output")
@click.option("--json", "as_json", is_flag=True, help="Print every figure as one JSON object instead of the table.")
@click.option("--html", "html_path", default=None, help="Where to write the HTML report; default OUTPUT/report.html.")
@CALIBRATION
@ENDPOINT
def report(output, as_json, html_path, calibration_path, s3_endpoint_url):
    """Figures over a judge output: terminal summary and a self-contained HTML report."""

    calibration = calibration_path and read_calibration(calibration_path, s3_endpoint_url)
    verdicts = open_verdicts(output, s3_endpoint_url)
    fig = compute_figures(verdicts)
    fig["calibrated"] = calibration and calibrated_figures(verdicts, calibration)
    html_path = html_path or f"{output.rstrip('/')}/report.html"
    _write_text(html_path, report_html(fig), s3_endpoint_url)
    if as_json:
        click.echo(json.dumps(fig, indent=2, sort_keys=True))
        click.echo(f"report: {html_path}", err=True)
    else:
        click.echo(report_text(fig))
        click.echo(f"\nreport: {html_path}")


@click.command()
@click.argument("output")
@click.option("--bootstrap", "rounds", type=click.IntRange(0), default=200, show_default=True,
              help="Bootstrap rounds for the 95% intervals (0: none).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.option("--output", "table_path", default=None, help="Also write the table: .csv, or JSON otherwise.")
@ENDPOINT
def leaderboard(output, rounds, seed, as_json, table_path, s3_endpoint_url):
    """Bradley-Terry ratings (Elo scale) of model_a/model_b, with bootstrap intervals."""

    rows = fit_leaderboard(battles_from(open_verdicts(output, s3_endpoint_url)), rounds=rounds, seed=seed)
    if table_path:
        if table_path.endswith(".csv"):
            import csv
            import io

            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            text = buffer.getvalue()
        else:
            text = json.dumps(rows, indent=2)
        _write_text(table_path, text, s3_endpoint_url)
    click.echo(json.dumps(rows, indent=2) if as_json else leaderboard_text(rows))


@click.command("select")
@click.argument("output")
@click.option("--min-confidence", type=float, required=True,
              help="Keep a pair when the judge's probability for its winner is at least this (0..1).")
@click.option("--consistent-only", is_flag=True, help="Keep only pairs on which both orders agreed.")
@click.option("--output", "dpo_output", required=True,
              help="A .parquet file, or a directory (gets dpo.parquet); local or s3://.")
@click.option("--format", "form", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="TRL's preference form: conversational (prompt as messages, chosen and rejected as "
                   "assistant messages; TRL applies the chat template) or standard (strings); auto: "
                   "conversational when any prompt was chat. Standard refuses chat prompts.")
@CALIBRATION
@click.option("--include-undecided", is_flag=True,
              help="With a calibration that has a decision threshold: keep pairs below it too.")
@click.option("--overwrite", is_flag=True, help="Replace an existing DPO file (refused otherwise).")
@ENDPOINT
def select(output, min_confidence, consistent_only, dpo_output, form, calibration_path, include_undecided,
           overwrite, s3_endpoint_url):
    """DPO pairs (prompt, chosen, rejected) from confident verdicts, for TRL's DPOTrainer.
    With --calibration, confidence is the calibrated one, and only decided pairs are kept
    when the file has a decision threshold (unless --include-undecided). The file appears
    whole or not at all."""

    calibration = calibration_path and read_calibration(calibration_path, s3_endpoint_url)
    result = select_pairs(open_verdicts(output, s3_endpoint_url), dpo_output, min_confidence, consistent_only,
                          s3_endpoint_url, form, calibration=calibration, decided_only=not include_undecided,
                          overwrite=overwrite, warn=lambda text: click.echo(f"magistrate: warning: {text}", err=True))
    left_out = ", ".join(f"{n} {why}" for why, n in result["left_out"].items()) or "none"
    click.echo(f"{result['pairs']} pairs written to {result['output']} ({result['format']} form); "
               f"left out: {left_out}")


@click.command()
@click.argument("output")
@click.option("--out", "out_path", required=True, help="Where to write the calibration JSON (local or s3://).")
@click.option("--target-agreement", type=float, default=None,
              help="Also choose a decision threshold: agreement with the labels to guarantee, e.g. 0.9.")
@click.option("--risk", type=float, default=None,
              help="With --target-agreement: the probability the guarantee may fail, e.g. 0.1.")
@click.option("--folds", type=click.IntRange(2), default=FOLDS, show_default=True,
              help="Cross-validation folds for choosing temperature or Platt scaling.")
@click.option("--min-pairs", type=click.IntRange(1), default=MIN_PAIRS, show_default=True,
              help="Test only thresholds with at least this many labelled verdicts above them.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the folds.")
@ENDPOINT
def calibrate(output, out_path, target_agreement, risk, folds, min_pairs, seed, s3_endpoint_url):
    """Fit P(A is better) on an output's labelled pairs (temperature or Platt scaling), and
    optionally a decision threshold with a guarantee (docs/calibration.md)."""

    if (target_agreement is None) != (risk is None):
        raise click.UsageError("--target-agreement and --risk go together")
    calibration = calibrate_output(open_verdicts(output, s3_endpoint_url), folds=folds, seed=seed,
                                   target=target_agreement, risk=risk, min_pairs=min_pairs)
    _write_text(out_path, calibration.model_dump_json(indent=2) + "\n", s3_endpoint_url)
    click.echo(calibration_text(calibration))
    click.echo(f"\ncalibration: {out_path}")


@click.command()
@click.argument("output")
@click.option("--json", "as_json", is_flag=True, help="Print the counts and the offending ids as one JSON object.")
@ENDPOINT
def verify(output, as_json, s3_endpoint_url):
    """Check that OUTPUT holds each id of its input exactly once (a distributed group-by over
    the ids; the input is the one OUTPUT/_run.json names). Exit 0 if so, 3 if not."""
    from magistrate.cli import EXIT_INCOMPLETE
    from magistrate.pipelines.verify import verify_output  # imports ray

    result = verify_output(output, s3_endpoint_url)
    click.echo(json.dumps(result, indent=2) if as_json else verify_text(result))
    if not result["complete"]:
        again = ("rerun its judge command with --resume" if not result["success_marker"] else
                 "judge it again with --overwrite (--resume judges only units whose files are missing)")
        click.echo(f"magistrate: error: {output} does not hold each input id exactly once (the ids "
                   f"above); {again}", err=True)
        sys.exit(EXIT_INCOMPLETE)


_SAID = {"duplicates": "in the output more than once", "missing": "missing from the output",
         "extra": "in the output but not in the input", "input_duplicates": "in the input more than once"}


def verify_text(result: dict) -> str:
    lines = [f"verify {result['output']}: input {result['input']}: {result['input_rows']:,} input rows, "
             f"{result['output_rows']:,} output rows in {result['verdict_files']:,} verdict files, "
             f"{result['ids_checked']:,} distinct ids"]
    if result["complete"]:
        lines.append(f"complete: each of the {result['input_rows']:,} input ids is in the output exactly once")
    for kind, said in _SAID.items():
        found = result[kind]
        if found["count"]:
            shown = ", ".join(f"{e[0]!r} ({e[1]} times)" if isinstance(e, list) else repr(e)
                              for e in found["examples"])
            more = f" and {found['count'] - len(found['examples']):,} more" if found["count"] > len(found["examples"]) else ""
            lines.append(f"{found['count']:,} id(s) {said}: {shown}{more}")
    if not result["success_marker"]:
        lines.append("note: no _SUCCESS: the run that wrote this output did not finish it")
    return "\n".join(lines)


COMMANDS = (report, leaderboard, select, calibrate, verify)
