"""The online endpoint: a Ray Serve app whose replicas each host one async vLLM engine
and the same judging core as the batch pipeline (judges/core.py), so a pair gets the
same verdict online as in a batch run with the same settings.

    serve run deploy/serve.yaml          # the documented, tested config
    magistrate serve --judge mt-bench    # the same app from the command line

Admission is the app's: a replica takes `max_prompts_in_flight` engine prompts (pairs x
orders) at once and answers 503 + Retry-After past it, so one 64-pair batch counts as 128,
not as one request. Replica count and autoscaling are Serve's deployment options
(deploy/serve.yaml). Bodies are parsed, checked, rendered and tokenised, and verdicts read,
on a worker thread: the event loop, and so /healthz, keeps answering under load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema
from ray import serve
from ray.serve.config import BackpressureConfig
from starlette.exceptions import HTTPException as StarletteHTTPException

from magistrate.actors import metrics
from magistrate.actors.engine import AsyncVLLMEngine, EngineSettings
from magistrate.actors.placement import actor_resources, shippable, use_gpus
from magistrate.judges.core import Judge, JudgeSettings
from magistrate.model_files import resolve_model
from magistrate.pairs import decode_line, parse_line
from magistrate.pipelines import read_calibration
from magistrate.schema import run_constants
from magistrate.serve.access import api_key, exposure_problem, key_given, open_warning
from magistrate.serve.bodies import (
    MAX_BATCH_PAIRS,
    BatchRequest,
    BatchResponse,
    Caps,
    JudgeInfo,
    Pair,
    Problem,
    Verdict,
)

logger = logging.getLogger("ray.serve")
OPEN_PATHS = ("/healthz", "/docs", "/openapi.json", "/docs/oauth2-redirect")
_CAPS = Caps()


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
    open: bool = Field(False, description="Serve beyond loopback without an API key, on purpose.")
    max_prompts_in_flight: int = Field(128, ge=1, description=(
        "Engine prompts (pairs x orders) a replica judges at once; past it 503 + Retry-After, "
        "and a batch needing more answers 413."))
    retry_after_s: int = Field(5, ge=0, description="The Retry-After of a 503.")
    max_field_chars: int = Field(_CAPS.field_chars, ge=1, description="The prompt (all turns), each response.")
    max_messages: int = Field(_CAPS.messages, ge=1, description="Messages of a multi-turn prompt.")
    max_pair_chars: int = Field(_CAPS.pair_chars, ge=1, description="Prompt and both responses together.")
    verbose: bool = Field(False, description="vLLM's own INFO logs in the replica's output, not in its log file.")
    calibration: str | None = Field(None, description="A `magistrate calibrate` file (local or s3://): answers "
                                                      "get p_a_calibrated, confidence and decided.")

    def caps(self) -> Caps:
        return Caps(self.max_field_chars, self.max_messages, self.max_pair_chars)


api = FastAPI(
    title="magistrate",
    summary="Pairwise LLM judging: which of two responses is better, with P(A better).",
    responses={401: {"model": Problem}, 413: {"model": Problem}, 422: {"model": Problem},
               503: {"model": Problem, "description": "Full or not ready: retry after Retry-After seconds."}},
)


def _problem(status: int, error: str, detail: list | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(Problem(error=error, detail=detail).model_dump(exclude_none=True),
                        status_code=status, headers=headers)


class _Refused(Exception):
    """A request answered with an error (raised from the worker thread that reads bodies)."""

    def __init__(self, status: int, error: str, detail: list | None = None, headers: dict | None = None):
        self.answer = (status, error, detail, headers)

    def response(self) -> JSONResponse:
        return _problem(*self.answer)


def _field_errors(errors: list[dict], skip: int = 0) -> _Refused:
    """422 naming each bad field, e.g. `pairs.3.response_b: Field required`."""
    detail = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ())[skip:]) or "body"
        detail.append({"field": where, "message": e.get("msg", "invalid")})
    return _Refused(422, "; ".join(f"{d['field']}: {d['message']}" for d in detail), detail)


# Every 4xx/5xx has the one shape, FastAPI's and Starlette's own answers included.
@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _field_errors(exc.errors(), skip=1).response()


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


@api.exception_handler(Exception)
async def _internal(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("magistrate: unhandled error on %s", request.url.path)
    return _problem(500, f"internal error ({type(exc).__name__}); nothing was judged")


def _openapi() -> dict:
    """The schema, with the request bodies the handlers read themselves (off the event
    loop, so FastAPI does not know them)."""
    if api.openapi_schema is None:
        schema = get_openapi(title=api.title, version=api.version, summary=api.summary, routes=api.routes)
        _, defs = models_json_schema([(Pair, "validation"), (BatchRequest, "validation")],
                                     ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        api.openapi_schema = schema
    return api.openapi_schema


api.openapi = _openapi


def _body(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


class Guard:
    """Before any body is read: the API key (when $MAGISTRATE_API_KEY is set) and the
    body size limit. Plain ASGI, so an oversized body is refused without being buffered
    beyond the limit, and the key is compared but never logged."""

    # Set by the replica. A class attribute, not app state: Serve pickles the FastAPI app
    # and the deployment class by value, so a replica's `api` global is a copy the
    # middleware never sees, while this class travels by reference.
    max_body_bytes = ServeArgs().max_body_bytes

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = api_key()
        if key and path not in OPEN_PATHS and not key_given(headers, key):
            return await _problem(401, "missing or wrong API key: send `Authorization: Bearer <key>`")(
                scope, receive, send)
        limit = Guard.max_body_bytes
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

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


api.add_middleware(Guard)


def _proxy_host() -> str | None:
    """The address Serve's HTTP proxies listen on (deploy/serve.yaml's http_options)."""
    try:
        from ray.serve.context import _get_global_client

        return _get_global_client().http_config.host
    except Exception:  # noqa: BLE001 - outside a Serve cluster (tests of the app's parts)
        return None


@serve.deployment(
    # Defaults for `magistrate serve`; deploy/serve.yaml sets the same keys explicitly.
    # Requests in a replica are cheap to hold (admission by engine prompts refuses the
    # excess at once), so Serve's own limits sit above the app's and /healthz always
    # gets in.
    max_ongoing_requests=256,
    max_queued_requests=64,
    backpressure_config=BackpressureConfig(status_code=503, retry_after_s=5),
    health_check_period_s=10,
    health_check_timeout_s=30,
)
@serve.ingress(api)
class JudgeServer:
    """One replica: one async vLLM engine and the judging core."""

    async def __init__(self, args: dict[str, Any], judge: JudgeSettings):
        """`judge` arrives resolved from where the app was built (`judge_app`): a replica
        never looks a judge up by name. Serve routes no request to a replica before its
        constructor returns, so the engine's one-off first-request costs are paid here
        (the warm-up the batch host does), not by the first caller."""
        self.args = ServeArgs(**args)
        host = _proxy_host()
        if host is not None:
            problem = exposure_problem(host, self.args.open)
            if problem:
                raise RuntimeError(f"magistrate: {problem}")
            if warning := open_warning(host):
                logger.warning(warning)
        Guard.max_body_bytes = self.args.max_body_bytes
        self.caps = self.args.caps()
        self.in_flight = 0  # engine prompts being judged in this replica
        model = resolve_model(self.args.model)
        # Built on a thread: the replica's event loop answers Serve's checks meanwhile.
        self.engine = await asyncio.to_thread(AsyncVLLMEngine, EngineSettings(
            model=model, tensor_parallel_size=self.args.tensor_parallel_size,
            max_model_len=self.args.max_model_len, seed=self.args.seed,
            gpu_memory_utilization=self.args.gpu_memory_utilization, verbose=self.args.verbose,
            usage="online",
        ))
        self.judge = Judge(self.engine, judge)
        self.orders = 2 if self.judge.settings.order == "both" else 1
        self.constants = run_constants(judge, model)
        await self.judge.warm_up_async()
        logger.info("magistrate: judge %s (%s) on %s ready", judge.profile.name, self.judge.mode, model)

    def __del__(self):
        # Serve calls it when it stops a replica: the engine stops on purpose, quietly.
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()

    async def check_health(self) -> None:
        """Serve restarts a replica whose engine died."""
        await self.engine.check_health()

    def _read(self, body: bytes, model: type[BaseModel]) -> list[Pair]:
        """Body -> pairs, with the batch reader's checks (magistrate/pairs.py: bytes that
        are not UTF-8, duplicate keys, nesting deep enough to overflow a parser) and the
        caps. Runs on a worker thread: a 4 MiB body takes a while to parse."""
        text, problem = decode_line(body)
        record, problem = ({}, problem) if problem else parse_line(text)
        if problem:
            raise _Refused(422, f"body: {problem}", [{"field": "body", "message": problem}])
        try:
            parsed = model.model_validate(record, context={"caps": self.caps})
        except ValidationError as exc:
            raise _field_errors(exc.errors()) from None
        return [parsed] if isinstance(parsed, Pair) else parsed.pairs

    def _admit(self, pairs: list[Pair]) -> int:
        """Engine prompts these pairs take, reserved; or refused (413 never fits, 503 not now)."""
        need, cap = len(pairs) * self.orders, self.args.max_prompts_in_flight
        if need > cap or self.in_flight + need > cap:
            metrics.add("magistrate_admission_rejections", 1, judge=self.judge.profile.name,
                        status="413" if need > cap else "503")
        if need > cap:
            raise _Refused(413, f"this batch needs {need} engine prompts ({len(pairs)} pairs x {self.orders} "
                                f"orders); a replica takes at most {cap} at once (max_prompts_in_flight): send "
                                f"at most {cap // self.orders} pairs per request")
        if self.in_flight + need > cap:
            wait = self.args.retry_after_s
            raise _Refused(503, f"busy: {self.in_flight} of {cap} engine prompts in flight; retry after {wait} s",
                           headers={"Retry-After": str(wait)})
        self.in_flight += need
        return need

    async def _verdicts(self, request: Request, model: type[BaseModel]) -> list[Verdict] | JSONResponse:
        started = time.monotonic()
        try:
            pairs = await asyncio.to_thread(self._read, await request.body(), model)
            held = self._admit(pairs)  # no await between the check and the reservation
        except _Refused as refused:
            return refused.response()
        try:
            rows = await self.judge.judge_async([p.for_judge() for p in pairs])
        except Exception as exc:  # noqa: BLE001 - the engine failed: every pair of it, not the replica
            logger.exception("magistrate: the engine failed on a request")
            wait = self.args.retry_after_s
            return _problem(503, f"the engine failed ({type(exc).__name__}); nothing was judged: retry after "
                                 f"{wait} s", headers={"Retry-After": str(wait)})
        finally:
            self.in_flight -= held
        judge = self.judge.profile.name
        metrics.record_rows(judge, rows)  # a body's pairs are valid: no input error rows
        metrics.metric("magistrate_request_latency_seconds").observe(
            time.monotonic() - started, tags={"judge": judge, "route": request.url.path})
        latency_ms = (time.monotonic() - started) * 1000
        return [Verdict.from_row(p.id, row, self.constants, latency_ms) for p, row in zip(pairs, rows)]

    @api.post("/v1/judge", response_model=Verdict, summary="Judge one pair", openapi_extra=_body(Pair))
    async def judge_one(self, request: Request):
        verdicts = await self._verdicts(request, Pair)
        return verdicts if isinstance(verdicts, JSONResponse) else verdicts[0]

    @api.post("/v1/judge/batch", response_model=BatchResponse, openapi_extra=_body(BatchRequest),
              summary=f"Judge up to {MAX_BATCH_PAIRS} pairs in one request")
    async def judge_batch(self, request: Request):
        started = time.monotonic()
        verdicts = await self._verdicts(request, BatchRequest)
        if isinstance(verdicts, JSONResponse):
            return verdicts
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
            max_prompts_in_flight=self.args.max_prompts_in_flight, max_field_chars=self.caps.field_chars,
            max_messages=self.caps.messages, max_pair_chars=self.caps.pair_chars,
            calibration=self._calibration_info(),
        )

    def _calibration_info(self) -> dict | None:
        # A method, not a module function: the replica's class travels by value and met a
        # NameError for a module-level helper (tests/serve, 2026-12-02).
        calibration = self.judge.settings.calibration
        if calibration is None:
            return None
        decision = calibration.decision
        return {"method": calibration.method, "parameters": calibration.parameters,
                "n_labelled": calibration.n_labelled, "threshold": decision and decision.threshold,
                "target_agreement": decision and decision.target, "risk": decision and decision.risk}

    @api.get("/healthz", summary="200 when the engine answers; details only with the API key")
    async def healthz(self, request: Request):
        try:
            await asyncio.wait_for(self.engine.check_health(), timeout=10)
        except Exception as exc:  # noqa: BLE001 - any engine failure is "not ready"
            return _problem(503, f"not ready: the engine does not answer ({type(exc).__name__})",
                            headers={"Retry-After": "10"})
        body: dict[str, Any] = {"status": "ok", "ready": True}
        key = api_key()
        if key and key_given({k.lower(): v for k, v in request.headers.items()}, key):
            body.update(judge=self.constants["judge"], model=self.constants["model"], mode=self.judge.mode,
                        prompts_in_flight=self.in_flight, max_prompts_in_flight=self.args.max_prompts_in_flight)
        return body


def build_app(args: dict[str, Any]) -> serve.Application:
    """The app builder `serve run` calls with the config's `args:`."""
    return judge_app(ServeArgs(**(args or {})))


def judge_app(settings: ServeArgs, **deployment_options: Any) -> serve.Application:
    """The app for these settings. GPUs per replica follow tensor_parallel_size, as for
    a batch judge actor; deployment options (replicas, autoscaling) pass through."""
    # Resolved here, where the app is built: an unknown judge fails at deploy time, and a
    # judge registered in this process reaches every replica.
    calibration = settings.calibration and read_calibration(settings.calibration)
    judge = JudgeSettings(judge=settings.judge, mode=settings.mode, order=settings.order, seed=settings.seed,
                          max_new_tokens=settings.max_new_tokens, min_label_mass=settings.min_label_mass,
                          calibration=calibration or None).resolved()
    judge = shippable(judge)
    options = actor_resources(settings.tensor_parallel_size, use_gpus(settings.device), settings.gpu_type)
    return JudgeServer.options(ray_actor_options=options, **deployment_options).bind(settings.model_dump(), judge)
