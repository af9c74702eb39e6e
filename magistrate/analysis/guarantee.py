"""A confidence threshold with a guarantee: with probability at least 1 - risk (over the
draw of the labelled pairs), the verdicts at or above it agree with the labels at least at
`target` (docs/calibration.md).

The procedure is the one of "Trust or Escalate" (Jung, Brahman and Choi, ICLR 2025) as
its code runs it (jaehunjung1/cascaded-selective-evaluation): thresholds on a fixed grid,
those with fewer than `min_pairs` labelled verdicts at or above them dropped (a choice made
from the confidences alone, never the labels; the paper's code takes 30, see MIN_PAIRS); each remaining threshold λ is the null
hypothesis "agreement above λ < target", tested with the exact binomial test (its p-value
is P(Binomial(n, 1 - target) <= misses), which is below `risk` exactly when the
Clopper-Pearson lower bound on agreement at level 1 - risk reaches the target); the tests
run from the strictest threshold down, each at the full level `risk`, and stop at the
first that fails to reject (fixed-sequence testing, Bauer 1991; "Learn then Test",
Angelopoulos et al. 2021). The last threshold rejected is chosen: the largest coverage
the sequence reached. Fixed-sequence testing controls the family-wise error at `risk`, so
the chosen threshold's agreement is below the target with probability at most `risk`.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta, binom

from magistrate.judges.calibration import Decision

GRID = np.round(np.linspace(1.0, 0.5, 501), 3)  # strictest first; confidence of the winner is >= 0.5 when sane
# A threshold needs this many labelled verdicts at or above it to be tested. The paper's
# code uses 30; there one disagreement among the first 30 stops the whole sequence, and in
# tests/analysis/test_calibration.py's simulation (600 pairs, target 0.9, risk 0.1) nothing
# was decided in a third of the trials with 30, a tenth with 60 or 100, at the same
# failure share (0.05-0.07 of the risk's 0.1).
MIN_PAIRS = 100


def check_levels(target: float, risk: float) -> None:
    if not 0.0 < target < 1.0:
        raise ValueError(f"--target-agreement must be strictly between 0 and 1, not {target}")
    if not 0.0 < risk < 1.0:
        raise ValueError(f"--risk must be strictly between 0 and 1, not {risk}")


def lower_bound(agree: np.ndarray, n: np.ndarray, risk: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound on agreement at level 1 - risk (0 when none agree)."""
    agree, n = np.asarray(agree, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(risk, agree, n - agree + 1)
    return np.where(agree > 0, bound, 0.0)


def sweep(confidence: np.ndarray, agree: np.ndarray, grid: np.ndarray = GRID) -> tuple[np.ndarray, np.ndarray]:
    """For each threshold: verdicts with confidence >= it, and how many of them agree."""
    order = np.argsort(-confidence, kind="stable")
    ranked, hits = confidence[order], np.concatenate([[0], np.cumsum(agree[order])])
    n = np.searchsorted(-ranked, -grid, side="right")
    return n, hits[n]


def choose_threshold(confidence: np.ndarray, agree: np.ndarray, target: float, risk: float,
                     min_pairs: int = MIN_PAIRS) -> Decision:
    """confidence: each labelled verdict's calibrated confidence; agree: its winner is its
    label (a tie counts as a miss). NaN confidences (ties, errors) are never decided."""
    check_levels(target, risk)
    confidence = np.asarray(confidence, dtype=np.float64)
    agree = np.asarray(agree, dtype=bool)
    known = ~np.isnan(confidence)
    total = len(confidence)
    n, hits = sweep(confidence[known], agree[known])
    testable = n >= min_pairs
    misses = n - hits
    p_values = binom.cdf(misses, np.maximum(n, 1), 1.0 - target)
    passed = testable & (p_values <= risk)
    tested = np.flatnonzero(testable)
    failed = tested[~passed[tested]]
    stop = failed[0] if len(failed) else len(GRID)
    chosen = [i for i in tested if i < stop]
    if not chosen:
        why = (f"no threshold has {min_pairs} labelled verdicts above it" if not len(tested) else
               f"the strictest testable threshold ({GRID[tested[0]]:.3f}, {n[tested[0]]} pairs, agreement "
               f"{hits[tested[0]] / n[tested[0]]:.3f}) does not show agreement >= {target} at risk {risk}")
        return Decision(target=target, risk=risk, threshold=None, min_pairs=min_pairs, tested=len(tested[:1]),
                        pairs=total, decided=0, coverage=0.0, agreement=None, lower_bound=None,
                        message=f"nothing decided: {why}")
    i = chosen[-1]
    bound = float(lower_bound(hits[i], n[i], risk))
    return Decision(target=target, risk=risk, threshold=float(GRID[i]), min_pairs=min_pairs,
                    tested=len(chosen) + (stop < len(GRID)), pairs=total, decided=int(n[i]),
                    coverage=float(n[i] / total) if total else 0.0, agreement=float(hits[i] / n[i]),
                    lower_bound=bound,
                    message=f"confidence >= {GRID[i]:.3f} decides {n[i]} of {total} labelled pairs "
                            f"(agreement {hits[i] / n[i]:.3f}, lower bound {bound:.3f} at {1 - risk:.0%})")
