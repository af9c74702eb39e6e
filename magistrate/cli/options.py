"""Options several commands share, defined once."""

from __future__ import annotations

import click

from magistrate.pairs import MAX_FIELD_CHARS


def _each(*options):
    """Several click options as one decorator, in the order given."""
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


JUDGE = click.option("--judge", default="mt-bench", show_default=True, help="Judge profile name, or a custom YAML file.")
MODEL = click.option("--model", default=None, help="Local Hugging Face folder or hub id; default: the embedded judge.")
MODE = click.option("--mode", type=click.Choice(["logprob", "generate"]), default=None, help="Default: the profile's.")
ORDER = click.option("--order", type=click.Choice(["both", "ab", "random"]), default="both", show_default=True)
SEED = click.option("--seed", type=int, default=0, show_default=True)
VERBOSE = click.option("--verbose", is_flag=True,
                       help="Ray Data's and vLLM's own INFO logs on the terminal (default: warnings and errors).")
ENDPOINT = click.option("--s3-endpoint-url", default=None, help="S3-compatible endpoint (or $AWS_ENDPOINT_URL_S3).")
CALIBRATION = click.option("--calibration", "calibration_path", default=None,
                           help="A file `magistrate calibrate` wrote: adds calibrated confidence and decisions "
                                "(docs/calibration.md).")
judge_options = _each(JUDGE, MODEL, MODE, ORDER, SEED)
input_options = _each(
    click.option("--format", "format_", type=click.Choice(["auto", "rewardbench", "llmbar", "standard"]),
                 default="auto", show_default=True),
    click.option("--columns", default=None, help="Column mapping, e.g. prompt=input,response_a=output_1,response_b=output_2."),
    ENDPOINT,
    click.option("--max-field-chars", type=int, default=MAX_FIELD_CHARS, show_default=True,
                 help="Longest prompt or response, in characters; longer ones are error rows, never tokenised."),
)
