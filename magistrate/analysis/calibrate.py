"""Fitting the calibration map on a labelled output, and the calibrated figures of the
report (docs/calibration.md). Applying a map is magistrate/judges/calibration.py.

Temperature scaling (Guo et al. 2017) and Platt scaling (Platt 1999) are both fitted by
maximum likelihood on the order-averaged log-odds; the one with the lower k-fold
cross-validated log-loss is kept (a tie keeps temperature, which cannot reorder pairs).
Platt is fitted on the hard labels, without Platt's smoothed targets: with hundreds of
pairs or more the two differ little, and the log-loss compared is the hard labels' one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from magistrate.analysis.figures import ProbabilityTally
from magistrate.analysis.guarantee import GRID, MIN_PAIRS, check_levels, choose_threshold, sweep
from magistrate.analysis.output import Verdicts
from magistrate.judges.calibration import (Calibration, Figures, apply, logit, map_log_odds, order_log_odds,
                                           sigmoid, winner_confidence)
from magistrate.pipelines import InputError

FOLDS = 5
MIN_LABELLED = 20  # fewer labelled pairs than this fit nothing worth writing down
_COLUMNS = ("winner", "p_a", "ab_p_a", "ba_p_a", "label")
_LOG_T = (np.log(1e-3), np.log(1e3))  # the temperature is searched between 0.001 and 1000


@dataclass(frozen=True)
class Labelled:
    """The pairs a map is fitted on: label A or B, a probability, a winner that is not error."""

    z: np.ndarray  # order-averaged log-odds
    label_a: np.ndarray  # bool
    p_a: np.ndarray  # the row's own p_a (mean of the orders' probabilities)
    winner: np.ndarray  # object: A, B or tie
    excluded: dict[str, int]


def _why_left_out(winner, label, z) -> str:
    if label not in ("A", "B"):
        return "unlabelled" if label is None else f"label {label}"
    if winner in (None, "error") or np.isnan(z):
        return "no verdict" if winner != "error" else "error"
    return ""


def labelled_pairs(verdicts: Verdicts) -> Labelled:
    z_all, y, p, w = [], [], [], []
    excluded: Counter = Counter()
    for rows in verdicts.batches(_COLUMNS):
        z = order_log_odds(rows["ab_p_a"], rows["ba_p_a"], rows["p_a"])
        for zi, winner, label, p_a in zip(z, rows["winner"], rows["label"], rows["p_a"]):
            why = _why_left_out(winner, label, zi)
            if why:
                excluded[why] += 1
                continue
            z_all.append(zi)
            y.append(label == "A")
            p.append(sigmoid(zi) if p_a is None else p_a)
            w.append(winner)
    return Labelled(np.array(z_all, dtype=np.float64), np.array(y, dtype=bool), np.array(p, dtype=np.float64),
                    np.array(w, dtype=object), dict(excluded.most_common()))


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    """Mean log-loss, probabilities clipped as everywhere else."""
    z = logit(p)
    return float(np.mean(np.logaddexp(0.0, np.where(y, -z, z))))


def fit_temperature(z: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """T minimising the log-loss of sigmoid(z / T)."""
    sign = np.where(y, -1.0, 1.0)
    result = minimize_scalar(lambda log_t: float(np.mean(np.logaddexp(0.0, sign * z / np.exp(log_t)))),
                             bounds=_LOG_T, method="bounded", options={"xatol": 1e-7})
    return {"temperature": float(np.exp(result.x))}


def fit_platt(z: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """(a, b) minimising the log-loss of sigmoid(a z + b)."""
    target = y.astype(np.float64)

    def loss(theta):
        s = theta[0] * z + theta[1]
        residual = sigmoid(s) - target
        value = float(np.mean(np.logaddexp(0.0, s) - target * s))
        return value, np.array([np.mean(residual * z), np.mean(residual)])

    result = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return {"a": float(result.x[0]), "b": float(result.x[1])}


FITS = {"temperature": fit_temperature, "platt": fit_platt}


def cross_validated_log_loss(z: np.ndarray, y: np.ndarray, folds: int = FOLDS, seed: int = 0) -> dict[str, float]:
    """Held-out log-loss of each method over `folds` seeded folds (every pair held out once)."""
    fold = np.random.default_rng(seed).permutation(len(z)) % folds
    losses = {}
    for method, fit in FITS.items():
        held_out = np.empty(len(z))
        for k in range(folds):
            train, test = fold != k, fold == k
            held_out[test] = map_log_odds(method, fit(z[train], y[train]), z[test])
        losses[method] = _nll(held_out, y)
    return losses


def _scores(p: np.ndarray, y: np.ndarray) -> Figures:
    tally = ProbabilityTally()
    tally.add(p, y)
    return Figures(**tally.scores())


def fit(pairs: Labelled, folds: int = FOLDS, seed: int = 0, target: float | None = None,
        risk: float | None = None, min_pairs: int = MIN_PAIRS, source: dict | None = None) -> Calibration:
    """The map chosen by cross-validated log-loss, refitted on every pair; with target and
    risk, the decision threshold chosen on the same pairs (analysis/guarantee.py)."""
    n = len(pairs.z)
    if n < max(MIN_LABELLED, folds):
        raise InputError(f"calibration needs at least {max(MIN_LABELLED, folds)} labelled pairs "
                         f"(label A or B, a verdict with p_a); this output has {n}"
                         + (f" (left out: {_counts(pairs.excluded)})" if pairs.excluded else ""))
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, not {folds}")
    cv = cross_validated_log_loss(pairs.z, pairs.label_a, folds, seed)
    method = min(FITS, key=lambda m: (cv[m], m != "temperature"))
    parameters = FITS[method](pairs.z, pairs.label_a)
    if method == "platt" and not parameters["a"] > 0:  # a map no calibration file may hold
        raise InputError(f"calibration refused: the judge's p_a runs against the labels on these {n} pairs "
                         f"(accuracy {_scores(pairs.p_a, pairs.label_a).accuracy:.3f}; the best map, Platt, "
                         f"has slope {parameters['a']:.3g} and would flip every p_a): check that label A "
                         "means response_a is the better one")
    calibration = Calibration(
        method=method, parameters=parameters, n_labelled=n, excluded=pairs.excluded, folds=folds,
        cv_log_loss={**cv, "uncalibrated": _nll(pairs.p_a, pairs.label_a)},
        before=_scores(pairs.p_a, pairs.label_a),
        after=_scores(map_log_odds(method, parameters, pairs.z), pairs.label_a),
        source=source or {})
    if target is None and risk is None:
        return calibration
    if target is None or risk is None:
        raise ValueError("a decision needs both --target-agreement and --risk")
    check_levels(target, risk)
    confidence = winner_confidence(calibration.probability(pairs.z), pairs.winner)
    agree = pairs.winner == np.where(pairs.label_a, "A", "B")
    decision = choose_threshold(confidence, agree, target, risk, min_pairs)
    return calibration.model_copy(update={"decision": decision})


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in counter.items())


def calibrate_output(verdicts: Verdicts, **options) -> Calibration:
    """fit() over an output's labelled pairs; options as fit's."""
    if "label" not in verdicts.columns:
        raise InputError(f"{verdicts.loc.uri}: calibration needs labels (a label column with A or B), "
                         "and these verdicts have no label column")
    run: dict[str, set] = {k: set() for k in ("judge", "model", "mode", "order")}
    for rows in verdicts.batches(tuple(run)):
        for key, seen in run.items():
            seen.update(str(v) for v in rows[key] if v is not None)
    source = {"output": verdicts.loc.uri, **{k: sorted(v) for k, v in run.items()}}
    return fit(labelled_pairs(verdicts), source=source, **options)


class CalibratedTally:
    """The report's calibrated figures, added a batch at a time (memory flat in the rows)."""

    def __init__(self, calibration: Calibration) -> None:
        self.calibration = calibration
        self.before, self.after = ProbabilityTally(), ProbabilityTally()
        self.rows = 0  # rows that are not errors or unjudged
        self.decided = 0
        self.decided_labelled = self.decided_agree = 0
        # the curve: per threshold, rows at or above it, and labelled ones and their agreement
        decision = calibration.decision
        self.grid = GRID[::25]  # 1.000, 0.975, ..., 0.500
        self.chosen = None if decision is None else decision.threshold
        if self.chosen is not None and not np.isclose(self.grid, self.chosen).any():
            self.grid = np.sort(np.append(self.grid, self.chosen))[::-1]
        self.covered = np.zeros(len(self.grid), dtype=np.int64)
        self.labelled = np.zeros(len(self.grid), dtype=np.int64)
        self.hits = np.zeros(len(self.grid), dtype=np.int64)

    def add(self, rows: dict[str, list]) -> None:
        p_cal, confidence, decided = apply(self.calibration, rows["ab_p_a"], rows["ba_p_a"], rows["p_a"],
                                           rows["winner"])
        winner = np.asarray(rows["winner"], dtype=object)
        label = np.asarray(rows["label"], dtype=object)
        has_p = np.array([p is not None for p in rows["p_a"]], dtype=bool) & ~np.isnan(p_cal)
        judged = (winner != "error") & (winner != None)  # noqa: E711 (elementwise)
        labelled = judged & has_p & ((label == "A") | (label == "B"))
        self.rows += int(judged.sum())
        self.before.add(np.asarray(rows["p_a"], dtype=object)[labelled].astype(np.float64), label[labelled] == "A")
        self.after.add(p_cal[labelled], label[labelled] == "A")
        known = ~np.isnan(confidence)
        self.covered += sweep(confidence[known], np.zeros(int(known.sum()), dtype=bool), self.grid)[0]
        n, hits = sweep(confidence[labelled & known], (winner == label)[labelled & known], self.grid)
        self.labelled += n
        self.hits += hits
        if decided is not None:
            self.decided += int(decided.sum())
            self.decided_labelled += int((decided & labelled).sum())
            self.decided_agree += int((decided & labelled & (winner == label)).sum())

    def figures(self) -> dict:
        cal = self.calibration
        decision = cal.decision
        curve = [{"threshold": float(t), "coverage": self.covered[i] / self.rows if self.rows else None,
                  "labelled": int(self.labelled[i]),
                  "agreement": self.hits[i] / self.labelled[i] if self.labelled[i] else None,
                  "chosen": self.chosen is not None and bool(np.isclose(t, self.chosen))}
                 for i, t in enumerate(self.grid)]
        decisions = None
        if decision is not None:
            decisions = {"target": decision.target, "risk": decision.risk, "threshold": decision.threshold,
                         "decided": self.decided, "coverage": self.decided / self.rows if self.rows else None,
                         "labelled_decided": self.decided_labelled,
                         "agreement": (self.decided_agree / self.decided_labelled if self.decided_labelled
                                       else None),
                         "on_calibration_set": decision.model_dump()}
        return {"method": cal.method, "parameters": cal.parameters, "fitted_on": cal.n_labelled,
                "source": cal.source, "before": self.before.scores(), "after": self.after.scores(),
                "reliability": self.after.reliability(), "decisions": decisions, "curve": curve}


def calibrated_figures(verdicts: Verdicts, calibration: Calibration) -> dict:
    """The report's `calibrated` section: figures before and after the map over this output's
    labelled pairs, the calibrated reliability diagram, the decisions and coverage against
    agreement over thresholds (docs/analysis.md)."""
    tally = CalibratedTally(calibration)
    for rows in verdicts.batches(_COLUMNS):
        tally.add(rows)
    return tally.figures()
