"""A Bradley-Terry leaderboard on the Elo scale, as Chatbot Arena computes it.

Chatbot Arena's `compute_mle_elo` (lm-sys/FastChat, fastchat/serve/monitor/elo_analysis.py)
fits a logistic regression without intercept on battles, a win counting twice and a tie
once for each side, and reports 400 * coefficient (log base 10) + 1000; its confidence
intervals are the 2.5 and 97.5 percentiles over fits on battles resampled with
replacement (`get_bootstrap_result`). Here the same maximum-likelihood fit is a few Newton
steps in numpy, on battles aggregated per (model A, model B, outcome), which keeps memory
flat in the number of rows; resampling the battles is a multinomial draw over those cells.
Ratings are anchored so that their mean is 1000 (Arena anchors one named model instead).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

SCALE = 400.0
BASE = 10.0
INIT_RATING = 1000.0
OUTCOMES = ("A", "B", "tie")
# Keeps a model that won (or lost) every battle finite; negligible otherwise.
RIDGE = 1e-6


@dataclass(frozen=True)
class Battles:
    models: list[str]
    cells: np.ndarray  # (k, 3) ints: index of model_a, index of model_b, outcome (0 A, 1 B, 2 tie)
    counts: np.ndarray  # (k,) battles per cell

    @classmethod
    def from_counter(cls, counter: Counter) -> "Battles":
        """counter: (model_a, model_b, outcome) -> battles."""
        models = sorted({m for a, b, _ in counter for m in (a, b)})
        index = {m: i for i, m in enumerate(models)}
        keys = sorted(counter)
        cells = np.array([(index[a], index[b], OUTCOMES.index(o)) for a, b, o in keys], dtype=np.int64)
        counts = np.array([counter[k] for k in keys], dtype=np.float64)
        return cls(models, cells.reshape(-1, 3), counts)

    def wins(self, counts: np.ndarray) -> np.ndarray:
        """wins[i, j]: times i beat j, a tie counting half for each side."""
        n = len(self.models)
        a, b, outcome = self.cells.T
        wins = np.zeros((n, n))
        np.add.at(wins, (a, b), counts * (outcome == 0) + 0.5 * counts * (outcome == 2))
        np.add.at(wins, (b, a), counts * (outcome == 1) + 0.5 * counts * (outcome == 2))
        return wins


def fit_ratings(wins: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Maximum-likelihood Bradley-Terry ratings on the Elo scale, mean INIT_RATING."""
    n = wins.shape[0]
    games = wins + wins.T
    theta = np.zeros(n)  # natural-log strengths
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))  # P(i beats j)
        gradient = (wins - games * p).sum(axis=1) - RIDGE * theta
        w = games * p * (1.0 - p)
        hessian = w - np.diag(w.sum(axis=1)) - RIDGE * np.eye(n)
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        theta -= step
        theta -= theta.mean()
        if np.max(np.abs(step)) < 1e-10:
            break
    return INIT_RATING + SCALE / math.log(BASE) * theta


def leaderboard(battles: Battles, rounds: int = 200, seed: int = 0) -> list[dict]:
    """Rows sorted by rating: model, rating, lower, upper (95% bootstrap), battles, W/L/T."""
    ratings = fit_ratings(battles.wins(battles.counts))
    total = battles.counts.sum()
    rng = np.random.default_rng(seed)
    samples = np.array([
        fit_ratings(battles.wins(rng.multinomial(int(total), battles.counts / total).astype(np.float64)))
        for _ in range(rounds)
    ]) if rounds else ratings[None, :]
    lower, upper = np.percentile(samples, [2.5, 97.5], axis=0)
    a, b, outcome = battles.cells.T
    rows = []
    for i, model in enumerate(battles.models):
        as_a, as_b = battles.counts[a == i], battles.counts[b == i]
        oa, ob = outcome[a == i], outcome[b == i]
        won = as_a[oa == 0].sum() + as_b[ob == 1].sum()
        lost = as_a[oa == 1].sum() + as_b[ob == 0].sum()
        tied = as_a[oa == 2].sum() + as_b[ob == 2].sum()
        played = won + lost + tied
        rows.append({"model": model, "rating": float(ratings[i]), "lower": float(lower[i]),
                     "upper": float(upper[i]), "battles": int(played), "wins": int(won),
                     "losses": int(lost), "ties": int(tied),
                     "win_rate": float((won + 0.5 * tied) / played) if played else None})
    rows.sort(key=lambda r: -r["rating"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def battles_from(verdicts) -> Battles:
    """Battles from verdict rows with model_a and model_b; errors and self-play are left out."""
    verdicts.require(("model_a", "model_b"), "the leaderboard")
    counter: Counter = Counter()
    for rows in verdicts.batches(("model_a", "model_b", "winner")):
        for a, b, winner in zip(rows["model_a"], rows["model_b"], rows["winner"]):
            if winner in OUTCOMES and a is not None and b is not None and a != b:
                counter[(str(a), str(b), winner)] += 1
    if not counter:
        raise ValueError(f"{verdicts.loc.uri}: no judged pair between two different models "
                         "(model_a, model_b) to rank")
    return Battles.from_counter(counter)
