"""Calibration files made by hand for the tests of `--calibration` (judge, cascade, serve):
a stated map and threshold, not one fitted (tests/analysis/test_calibration.py fits)."""

from __future__ import annotations

from magistrate.judges.calibration import Calibration, Decision, Figures

_FIGURES = Figures(pairs=100, accuracy=0.7, log_loss=0.6, brier=0.2, ece=0.05)


def calibration(temperature: float, threshold: float | None, order: str = "both") -> Calibration:
    decision = Decision(target=0.9, risk=0.1, threshold=threshold, min_pairs=30, tested=3, pairs=100,
                        decided=40, coverage=0.4, agreement=0.95, lower_bound=0.91, message="hand-made")
    return Calibration(method="temperature", parameters={"temperature": temperature}, n_labelled=100,
                       excluded={}, folds=5, cv_log_loss={"temperature": 0.6, "platt": 0.61, "uncalibrated": 0.7},
                       before=_FIGURES, after=_FIGURES, decision=decision,
                       source={"output": "hand-made", "judge": ["mt-bench"], "mode": ["logprob"], "order": [order]})
