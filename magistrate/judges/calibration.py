"""A calibration map and a decision threshold, applied to verdict rows (docs/calibration.md).

`magistrate calibrate` fits the map on labelled pairs (magistrate/analysis/calibrate.py) and
writes it as JSON; this module is what applying it needs, pure numpy with no I/O, so that
batch judging, Serve and the analysis commands share one definition:

- the map's input is the order-averaged log-odds z: the mean of logit(p) over the orders
  judged (`ab_p_a`, `ba_p_a`, each already in the original frame, combine.py), or logit(p_a)
  when a row has neither; probabilities are clipped to [EPS, 1 - EPS] first;
- temperature scaling (Guo et al. 2017): p_a_calibrated = sigmoid(z / T);
  Platt scaling (Platt 1999): p_a_calibrated = sigmoid(a z + b);
- `confidence` is the calibrated probability of the winner the row names (p_a_calibrated
  for A, 1 - p_a_calibrated for B); a tie or an error names none, and has none;
- with a decision block, `decided` is confidence >= its threshold (false without a
  confidence, and false everywhere when no threshold passed the test); without one, null.

A file that would change decisions silently is refused, naming the field: a threshold is
finite and in [0.5, 1] (or null), every parameter finite, a temperature and a Platt slope
above 0 (a slope at or below 0 would flip or flatten every p_a).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from magistrate.judges.problems import validation_problems

EPS = 1e-6
FORMAT = "magistrate-calibration"
PARAMETERS = {"temperature": ("temperature",), "platt": ("a", "b")}
ADDED_COLUMNS = ("p_a_calibrated", "confidence", "decided")
# What a file may hold where it changes decisions: a map parameter is a finite number,
# and a threshold a finite one in [0.5, 1] (the confidence of a winner the calibrated
# probability still backs; NaN would decide nothing, -inf everything).
Finite = Annotated[float, Field(allow_inf_nan=False)]
Threshold = Annotated[float, Field(ge=0.5, le=1.0, allow_inf_nan=False)]


class Figures(BaseModel):
    """How well a probability of A predicts the labels, over `pairs` labelled pairs."""

    model_config = ConfigDict(extra="forbid")
    pairs: int
    accuracy: float | None  # the side given more than 0.5 is the label's (0.5: half)
    log_loss: float | None
    brier: float | None
    ece: float | None  # ten equal-width bins, as the report's


class Decision(BaseModel):
    """The threshold chosen so that, with probability at least 1 - risk, the verdicts at or
    above it agree with the labels at least at `target` (analysis/guarantee.py)."""

    model_config = ConfigDict(extra="forbid")
    target: float
    risk: float
    threshold: Threshold | None  # None: no threshold passed; nothing is decided
    min_pairs: int  # thresholds with fewer labelled verdicts at or above them are not tested
    tested: int  # thresholds tested before the sequence stopped
    pairs: int  # labelled pairs the threshold was chosen on
    decided: int  # of those, at or above the threshold
    coverage: float  # decided / pairs
    agreement: float | None  # the decided pairs' agreement with their labels
    lower_bound: float | None  # its exact (Clopper-Pearson) lower bound at level 1 - risk
    message: str


class Calibration(BaseModel):
    """What `magistrate calibrate` writes, and `--calibration FILE` reads."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["magistrate-calibration"] = FORMAT
    version: Literal[1] = 1
    method: Literal["temperature", "platt"]
    parameters: dict[str, Finite]
    n_labelled: int  # pairs the map was fitted on (label A or B, a p_a, a winner that is not error)
    excluded: dict[str, int]  # rows left out, by why
    folds: int
    cv_log_loss: dict[str, float]  # held-out log-loss per method, and of the uncalibrated p_a
    before: Figures  # the row's p_a on the fitted pairs
    after: Figures  # p_a_calibrated on the same pairs (in-sample)
    decision: Decision | None = None
    source: dict[str, list[str] | str]  # the output fitted on, and its judge, model, mode

    @field_validator("parameters")
    @classmethod
    def _parameters_fit_the_method(cls, parameters: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        method = info.data.get("method")  # absent: the method itself is wrong, and said so
        if method is None:
            return parameters
        want = PARAMETERS[method]
        if sorted(parameters) != sorted(want):
            raise ValueError(f"method {method} takes parameters {', '.join(want)}, "
                             f"not {', '.join(sorted(parameters)) or 'none'}")
        if method == "temperature" and not parameters["temperature"] > 0:
            raise ValueError(f"the temperature must be above 0, not {parameters['temperature']}")
        if method == "platt" and not parameters["a"] > 0:
            raise ValueError(f"the Platt slope a must be above 0, not {parameters['a']} (at or below 0 "
                             "it flips or flattens every p_a)")
        return parameters

    def probability(self, z: np.ndarray) -> np.ndarray:
        """P(A is better) from order-averaged log-odds (NaN stays NaN)."""
        return map_log_odds(self.method, self.parameters, np.asarray(z, dtype=np.float64))


def parse_calibration(text: str | bytes, name: str = "the calibration file") -> Calibration:
    """A calibration from its JSON text; ValueError naming what is wrong."""
    try:
        return Calibration.model_validate_json(text)
    except ValidationError as exc:
        raise ValueError(f"{name} is not a magistrate calibration ({validation_problems(exc)})") from None


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))  # no overflow warnings


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def map_log_odds(method: str, parameters: dict[str, float], z: np.ndarray) -> np.ndarray:
    if method == "temperature":
        return sigmoid(z / parameters["temperature"])
    return sigmoid(parameters["a"] * z + parameters["b"])


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def order_log_odds(ab_p_a, ba_p_a, p_a) -> np.ndarray:
    """The map's input per row: the mean log-odds of the orders judged, else logit(p_a);
    NaN for a row with no probability (an error, a dry run). Sequences may hold None."""
    orders = np.stack([logit(_floats(ab_p_a)), logit(_floats(ba_p_a))])
    judged = ~np.isnan(orders)
    count = judged.sum(axis=0)
    total = np.where(judged, orders, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    return np.where(count > 0, mean, logit(_floats(p_a)))


def winner_confidence(p_calibrated: np.ndarray, winners) -> np.ndarray:
    """The calibrated probability of the winner each row names; NaN for tie, error, none."""
    winners = np.asarray(list(winners), dtype=object)
    return np.where(winners == "A", p_calibrated, np.where(winners == "B", 1.0 - p_calibrated, np.nan))


def apply(calibration: Calibration, ab_p_a, ba_p_a, p_a, winner) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows' (p_a_calibrated, confidence, decided), vectorised over equal-length sequences
    of the verdict columns (None allowed). NaN where a row has no value; `decided` is None
    without a decision block."""
    p_calibrated = calibration.probability(order_log_odds(ab_p_a, ba_p_a, p_a))
    confidence = winner_confidence(p_calibrated, winner)
    decision = calibration.decision
    if decision is None:
        return p_calibrated, confidence, None
    if decision.threshold is None:
        return p_calibrated, confidence, np.zeros(len(confidence), dtype=bool)
    with np.errstate(invalid="ignore"):
        return p_calibrated, confidence, confidence >= decision.threshold


def calibrated_fields(calibration: Calibration, row: dict) -> dict:
    """The added columns of one verdict row (a dict with winner, p_a, ab_p_a, ba_p_a, as
    combine() makes it): {"p_a_calibrated", "confidence", "decided"}, None where a row has none."""
    p, c, d = apply(calibration, [row.get("ab_p_a")], [row.get("ba_p_a")], [row.get("p_a")], [row.get("winner")])
    return {"p_a_calibrated": None if np.isnan(p[0]) else float(p[0]),
            "confidence": None if np.isnan(c[0]) else float(c[0]),
            "decided": None if d is None else bool(d[0])}


def calibration_digest(calibration: Calibration) -> str:
    """What a resumed run checks: the same map as the run began with (the file's path may
    hold another one by then)."""
    return hashlib.sha256(calibration.model_dump_json().encode()).hexdigest()[:16]


def calibration_mismatch(calibration: Calibration, judge, model: str) -> str | None:
    """How the run a map was fitted on differs from this one (judge, model, mode, order),
    in words; None when they agree or the file does not say. `judge`: resolved JudgeSettings."""
    now = {"judge": judge.profile.name, "model": model, "mode": judge.mode, "order": judge.order}
    differ = [key for key, value in now.items()
              if isinstance(calibration.source.get(key), list) and calibration.source[key]
              and calibration.source[key] != [value]]
    if not differ:
        return None
    fitted = ", ".join(f"{k} {'/'.join(calibration.source[k])}" for k in differ)
    return f"{fitted} (this run: {', '.join(f'{k} {now[k]}' for k in differ)})"
