"""`magistrate report`, `magistrate leaderboard` and `magistrate select`: thin wrappers over
magistrate.analysis (docs/analysis.md). Registered on the main group in cli.py."""

from __future__ import annotations

import json

import click

from magistrate.analysis.bradley_terry import battles_from, leaderboard as fit_leaderboard
from magistrate.analysis.figures import compute_figures
from magistrate.analysis.html import report_html
from magistrate.analysis.output import open_verdicts
from magistrate.analysis.select import FORMATS, select_pairs
from magistrate.analysis.terminal import leaderboard_text, report_text
from magistrate.cli.options import ENDPOINT
from magistrate.pipelines.sources import locate
from magistrate.pipelines.store import write_whole



def _write_text(uri: str, text: str, endpoint_url: str | None) -> None:

    loc = locate(uri, endpoint_url)
    write_whole(loc, loc.path, text.encode("utf-8"))


@click.command()
@click.argument("output")
@click.option("--json", "as_json", is_flag=True, help="Print every figure as one JSON object instead of the table.")
@click.option("--html", "html_path", default=None, help="Where to write the HTML report; default OUTPUT/report.html.")
@ENDPOINT
def report(output, as_json, html_path, s3_endpoint_url):
    """Figures over a judge output: terminal summary and a self-contained HTML report."""

    fig = compute_figures(open_verdicts(output, s3_endpoint_url))
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
@ENDPOINT
def select(output, min_confidence, consistent_only, dpo_output, form, s3_endpoint_url):
    """DPO pairs (prompt, chosen, rejected) from confident verdicts, for TRL's DPOTrainer."""

    result = select_pairs(open_verdicts(output, s3_endpoint_url), dpo_output, min_confidence,
                          consistent_only, s3_endpoint_url, form)
    left_out = ", ".join(f"{n} {why}" for why, n in result["left_out"].items()) or "none"
    click.echo(f"{result['pairs']} pairs written to {result['output']} ({result['format']} form); "
               f"left out: {left_out}")


COMMANDS = (report, leaderboard, select)
