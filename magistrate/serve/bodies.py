"""HTTP bodies of the online endpoint: what a client sends and gets back.

The verdict fields are the batch output's (docs/output-schema.md), grouped: the per-order
`ab_*`/`ba_*` columns of a Parquet row become `orders.ab.*`/`orders.ba.*` here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from magistrate.judges.combine import ORDERS, PER_ORDER_FIELDS
from magistrate.pairs import as_text, derived_id, row_problem

MAX_BATCH_PAIRS = 64


@dataclass(frozen=True)
class Caps:
    """Size limits of one pair online (ServeArgs sets them; docs/serving.md)."""

    field_chars: int = 100_000  # the prompt (over its messages), each response, the id
    messages: int = 100  # messages of a multi-turn prompt
    pair_chars: int = 300_000  # prompt and both responses together


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class Pair(BaseModel):
    """One comparison: a prompt (text, or chat messages ending with the user's turn)
    and two responses to it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "id": "q1",
        "prompt": "What is the capital of France?",
        "response_a": "Paris.",
        "response_b": "Lyon.",
    }]})

    id: str | None = Field(None, max_length=512, description="Echoed back; derived from the content when absent.")
    prompt: str | list[Message]
    response_a: str
    response_b: str

    @model_validator(mode="after")
    def _judgeable(self, info: ValidationInfo) -> "Pair":
        caps = (info.context or {}).get("caps") or Caps()
        problem = (row_problem(self.core_prompt(), self.response_a, self.response_b, caps.field_chars,
                               caps.messages, caps.pair_chars)
                   or (self.id is not None and as_text("id", self.id)[1]))
        if problem:
            raise ValueError(problem)
        if self.id is None:
            self.id = derived_id(self.core_prompt(), self.response_a, self.response_b)
        return self

    def core_prompt(self) -> str | list[dict]:
        if isinstance(self.prompt, str):
            return self.prompt
        return [m.model_dump() for m in self.prompt]

    def for_judge(self) -> dict[str, Any]:
        """The pair as judges.core.Judge takes it (the batch pipeline's shape)."""
        return {"id": self.id, "prompt": self.core_prompt(),
                "response_a": self.response_a, "response_b": self.response_b}


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs: list[Pair] = Field(min_length=1, max_length=MAX_BATCH_PAIRS)


class OrderDetail(BaseModel):
    """One order's reading, mapped back to the original frame (A = response_a)."""

    verdict: str | None
    p_a: float | None
    rationale: str | None
    raw: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None
    label_mass: float | None = Field(None, description="logprob mode: the verdict labels' next-token probability.")
    p_source: str | None = Field(None, description="Where p_a came from: 'logprobs' (the verdict label's "
                                                   "log-probabilities) or 'verdict' (1, 0.5, 0).")


class Verdict(BaseModel):
    id: str
    winner: Literal["A", "B", "tie", "error"]
    p_a: float | None = Field(description="P(response_a is better), mean over the orders judged; null on error.")
    consistent: bool | None = Field(description="Both orders agree; null with one order.")
    error: str | None
    injection_suspect: bool | None
    orders: dict[str, OrderDetail] = Field(description="Per order judged: 'ab' (A shown first), 'ba'.")
    prompt_tokens: int
    completion_tokens: int
    judge: str
    judge_version: int
    mode: str
    order: str
    model: str
    latency_ms: float
    # With --calibration (docs/calibration.md); null without one.
    p_a_calibrated: float | None = Field(None, description="The calibrated P(response_a is better).")
    confidence: float | None = Field(None, description="The calibrated probability of the winner named.")
    decided: bool | None = Field(None, description="Confidence at or above the calibration's decision threshold.")

    @classmethod
    def from_row(cls, pair_id: str, row: dict[str, Any], constants: dict[str, Any],
                 latency_ms: float) -> "Verdict":
        orders = {
            o: OrderDetail(**{f: row.get(f"{o}_{f}") for f in PER_ORDER_FIELDS})
            for o in ORDERS if row.get(f"{o}_prompt_tokens") is not None or row.get(f"{o}_error")
        }
        return cls(
            id=pair_id,
            winner=row["winner"], p_a=row["p_a"], consistent=row["consistent"], error=row["error"],
            injection_suspect=row["injection_suspect"], orders=orders,
            prompt_tokens=sum(d.prompt_tokens or 0 for d in orders.values()),
            completion_tokens=sum(d.completion_tokens or 0 for d in orders.values()),
            latency_ms=latency_ms, **constants,
            **{k: row.get(k) for k in ("p_a_calibrated", "confidence", "decided")},
        )


class BatchResponse(BaseModel):
    verdicts: list[Verdict]
    latency_ms: float


class JudgeInfo(BaseModel):
    """The judge this endpoint serves and the settings every verdict uses."""

    judge: str
    judge_version: int
    mode: str
    modes: list[str]
    order: str
    seed: int
    model: str
    max_model_len: int
    tensor_parallel_size: int
    max_batch_pairs: int
    max_body_bytes: int
    max_prompts_in_flight: int = Field(description="Engine prompts (pairs x orders) a replica takes at once.")
    max_field_chars: int
    max_messages: int
    max_pair_chars: int
    models_for: list[str] = Field(description="The models the profile was written for.")
    calibration: dict | None = Field(None, description="The calibration applied: method, parameters, "
                                                       "decision threshold; null without one.")


class Problem(BaseModel):
    """Every error answer: what went wrong, in one line a person can act on."""

    error: str
    detail: list[dict[str, Any]] | None = None
