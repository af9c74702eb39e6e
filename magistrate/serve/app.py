"""The online endpoint: a Ray Serve app whose replicas each host one async vLLM engine
and the same judging core as the batch pipeline (judges/core.py), so a pair gets the
same verdict online as in a batch run with the same settings.

    serve run deploy/serve.yaml          # the documented, tested config
    magistrate serve --judge mt-bench    # the same app from the command line

Replica count, autoscaling and back-pressure (max_ongoing_requests, max_queued_requests,
the 503 + Retry-After answer) are Serve's deployment options, set in deploy/serve.yaml.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.config import BackpressureConfig

from magistrate.actors.engine import AsyncVLLMEngine, EngineSettings
from magistrate.actors.placement import actor_resources, shippable, use_gpus
from magistrate.judges.core import JudgeSettings
from magistrate.judges.core import Judge
from magistrate.model_files import resolve_model
from magistrate.pairs import decode_line, parse_line
from magistrate.schema import run_constants
from magistrate.serve.bodies import (
    MAX_BATCH_PAIRS,
    BatchRequest,
    BatchResponse,
    JudgeInfo,
    Pair,
    Problem,
    Verdict,
)

logger = logging.getLogger("ray.serve")
API_KEY_ENV = "MAGISTRATE_API_KEY"
OPEN_PATHS = ("/healthz", "/docs", "/openapi.json", "/docs/oauth2-redirect")


class ServeArgs(BaseModel):
    """The app's arguments (`args:` in deploy/serve.yaml, flags of `magistrate serve`)."""

    model_config = ConfigDict(extra="forbid")

    judge: str = "mt-bench"
    model: str | None = Field(None, description="Local HF folder or hub id; null: the embedded judge.")
    mode: str | None = None
    order: str = "both"
    seed: int = 0
    tensor_parallel_size: int = 1
    device: str = "auto"
    gpu_type: str | None = None
    max_model_len: int | None = None
    max_new_tokens: int | None = None
    min_label_mass: float = Field(0.0, ge=0, le=1, description="logprob mode: less label mass is an error.")
    gpu_memory_utilization: float | None = None
    max_body_bytes: int = Field(4 * 2**20, description="Larger request bodies answer 413.")


api = FastAPI(
    title="magistrate",
    summary="Pairwise LLM judging: which of two responses is better, with P(A better).",
    responses={401: {"model": Problem}, 413: {"model": Problem}, 422: {"model": Problem},
               503: {"model": Problem, "description": "Full or not ready: retry after Retry-After seconds."}},
)
api.state.max_body_bytes = ServeArgs().max_body_bytes


def _problem(status: int, error: str, detail: list | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(Problem(error=error, detail=detail).model_dump(exclude_none=True),
                        status_code=status, headers=headers)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field, e.g. `pairs.3.response_b: Field required`."""
    detail = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "body"
        detail.append({"field": where, "message": e.get("msg", "invalid")})
    return _problem(422, "; ".join(f"{d['field']}: {d['message']}" for d in detail), detail)


class Guard:
    """Before any body is parsed: the API key (when $MAGISTRATE_API_KEY is set) and the
    body size limit. Plain ASGI, so an oversized body is refused without being buffered
    beyond the limit, and the key is compared but never logged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = os.environ.get(API_KEY_ENV)
        if key and path not in OPEN_PATHS:
            given = headers.get("authorization", "").removeprefix("Bearer ").strip() or headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), key.encode()):
                return await _problem(401, "missing or wrong API key: send `Authorization: Bearer <key>`")(
                    scope, receive, send)
        limit = api.state.max_body_bytes
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            return await _problem(413, f"request body is {int(length)} bytes; the limit is {limit}")(
                scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        # No (or a lying) Content-Length: read up to the limit, then replay to the app.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                return await _problem(413, f"request body is over the limit of {limit} bytes")(
                    scope, receive, send)
        body, sent = b"".join(chunks), False
        if body and "json" in headers.get("content-type", "json"):
            # The batch reader's own checks (magistrate/pairs.py): bytes that are not UTF-8,
            # duplicate keys (JSON parsers keep the last one silently), nesting deep
            # enough to overflow a parser; answered as every other bad field is.
            text, problem = decode_line(body)
            problem = problem or parse_line(text)[1]
            if problem:
                return await _problem(422, f"body: {problem}", [{"field": "body", "message": problem}])(
                    scope, receive, send)

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


api.add_middleware(Guard)


@serve.deployment(
    # Defaults for `magistrate serve`; deploy/serve.yaml sets the same keys explicitly.
    max_ongoing_requests=16,
    max_queued_requests=32,
    backpressure_config=BackpressureConfig(status_code=503, retry_after_s=5),
    health_check_period_s=10,
    health_check_timeout_s=30,
)
@serve.ingress(api)
class JudgeServer:
    """One replica: one async vLLM engine and the judging core."""

    def __init__(self, args: dict[str, Any], judge: JudgeSettings):
        """`judge` arrives resolved from where the app was built (`judge_app`): a replica
        never looks a judge up by name."""
        self.args = ServeArgs(**args)
        api.state.max_body_bytes = self.args.max_body_bytes
        model = resolve_model(self.args.model)
        self.engine = AsyncVLLMEngine(EngineSettings(
            model=model, tensor_parallel_size=self.args.tensor_parallel_size,
            max_model_len=self.args.max_model_len, seed=self.args.seed,
            gpu_memory_utilization=self.args.gpu_memory_utilization,
        ))
        self.judge = Judge(self.engine, judge)
        self.constants = run_constants(judge, model)
        logger.info("magistrate: judge %s (%s) on %s ready", judge.profile.name, self.judge.mode, model)

    async def check_health(self) -> None:
        """Serve restarts a replica whose engine died."""
        await self.engine.check_health()

    async def _verdicts(self, pairs: list[Pair]) -> list[Verdict]:
        started = time.monotonic()
        rows = await self.judge.judge_async([p.for_judge() for p in pairs])
        latency_ms = (time.monotonic() - started) * 1000
        return [Verdict.from_row(p.id, row, self.constants, latency_ms) for p, row in zip(pairs, rows)]

    @api.post("/v1/judge", response_model=Verdict, summary="Judge one pair")
    async def judge_one(self, pair: Pair) -> Verdict:
        return (await self._verdicts([pair]))[0]

    @api.post("/v1/judge/batch", response_model=BatchResponse,
              summary=f"Judge up to {MAX_BATCH_PAIRS} pairs in one request")
    async def judge_batch(self, body: BatchRequest) -> BatchResponse:
        started = time.monotonic()
        verdicts = await self._verdicts(body.pairs)
        return BatchResponse(verdicts=verdicts, latency_ms=(time.monotonic() - started) * 1000)

    @api.get("/v1/judges", response_model=JudgeInfo, summary="The judge this endpoint serves")
    async def judges(self) -> JudgeInfo:
        profile = self.judge.profile
        return JudgeInfo(
            judge=profile.name, judge_version=profile.version, mode=self.judge.mode,
            modes=list(profile.modes), order=self.args.order, seed=self.args.seed,
            model=self.constants["model"], max_model_len=self.engine.max_model_len,
            tensor_parallel_size=self.args.tensor_parallel_size, max_batch_pairs=MAX_BATCH_PAIRS,
            max_body_bytes=self.args.max_body_bytes, models_for=list(profile.models),
        )

    @api.get("/healthz", summary="200 when the engine answers")
    async def healthz(self) -> dict:
        try:
            await self.engine.check_health()
        except Exception as exc:  # noqa: BLE001 - any engine failure is "unhealthy"
            return _problem(503, f"engine unhealthy: {type(exc).__name__}", headers={"Retry-After": "10"})
        return {"status": "ok", "judge": self.constants["judge"], "model": self.constants["model"]}


def build_app(args: dict[str, Any]) -> serve.Application:
    """The app builder `serve run` calls with the config's `args:`."""
    return judge_app(ServeArgs(**(args or {})))


def judge_app(settings: ServeArgs, **deployment_options: Any) -> serve.Application:
    """The app for these settings. GPUs per replica follow tensor_parallel_size, as for
    a batch judge actor; deployment options (replicas, autoscaling) pass through."""
    # Resolved here, where the app is built: an unknown judge fails at deploy time, and a
    # judge registered in this process reaches every replica.
    judge = JudgeSettings(judge=settings.judge, mode=settings.mode, order=settings.order, seed=settings.seed,
                          max_new_tokens=settings.max_new_tokens, min_label_mass=settings.min_label_mass).resolved()
    judge = shippable(judge)
    options = actor_resources(settings.tensor_parallel_size, use_gpus(settings.device), settings.gpu_type)
    return JudgeServer.options(ray_actor_options=options, **deployment_options).bind(settings.model_dump(), judge)
