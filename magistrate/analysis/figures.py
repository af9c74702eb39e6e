"""The report's figures, computed in one streamed pass over the verdicts (docs/analysis.md
lists every key). Shares are 0..1; RewardBench's sections and score are 0..100 as it prints them."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from magistrate.analysis.rewardbench import pair_points, protocol, rewardbench_scores
from magistrate.analysis.output import Verdicts
from magistrate.judges.calibration import EPS
from magistrate.pipelines import error_cause

HIST_BINS = 20
CALIBRATION_BINS = 10
WINNERS = ("A", "B", "tie", "error")
_COLUMNS = ("winner", "p_a", "consistent", "error", "label", "subset", "ab_verdict", "ba_verdict",
            "ab_prompt_tokens", "ba_prompt_tokens", "ab_completion_tokens", "ba_completion_tokens",
            "ab_label_mass", "ba_label_mass", "injection_suspect", "judge", "model", "mode", "order", "run_id")
_RUN_KEYS = ("judge", "model", "mode", "order", "run_id")


def _bin(p: float, bins: int) -> int:
    return min(int(p * bins), bins - 1)


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


class ProbabilityTally:
    """How well probabilities of A predict A/B labels, added an array at a time: the
    reliability diagram's bins and ECE (CALIBRATION_BINS equal-width bins), Brier score,
    log-loss (probabilities clipped to [EPS, 1 - EPS]) and accuracy (the side given more
    than 0.5 is the label's; 0.5 counts half)."""

    def __init__(self) -> None:
        self.count = np.zeros(CALIBRATION_BINS, dtype=np.int64)
        self.p_sum = np.zeros(CALIBRATION_BINS)
        self.label_a = np.zeros(CALIBRATION_BINS, dtype=np.int64)
        self.brier = self.log_loss = self.correct = 0.0

    def add(self, p_a, label_a) -> None:
        p, y = np.asarray(p_a, dtype=np.float64), np.asarray(label_a, dtype=bool)
        cells = np.minimum((p * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
        self.count += np.bincount(cells, minlength=CALIBRATION_BINS)
        self.p_sum += np.bincount(cells, weights=p, minlength=CALIBRATION_BINS)
        self.label_a += np.bincount(cells, weights=y, minlength=CALIBRATION_BINS).astype(np.int64)
        self.brier += float(((p - y) ** 2).sum())
        clipped = np.clip(p, EPS, 1.0 - EPS)
        self.log_loss -= float(np.where(y, np.log(clipped), np.log1p(-clipped)).sum())
        self.correct += float(np.where(p == 0.5, 0.5, (p > 0.5) == y).sum())

    @property
    def pairs(self) -> int:
        return int(self.count.sum())

    def reliability(self) -> dict | None:
        """The report's `calibration` section; None without pairs."""
        n = self.pairs
        if not n:
            return None
        bins = []
        for i, (count, p_sum, label_a) in enumerate(zip(self.count.tolist(), self.p_sum.tolist(),
                                                        self.label_a.tolist())):
            bins.append({"lo": i / CALIBRATION_BINS, "hi": (i + 1) / CALIBRATION_BINS, "count": count,
                         "mean_p_a": _share(p_sum, count), "share_label_a": _share(label_a, count)})
        ece = sum(b["count"] / n * abs(b["mean_p_a"] - b["share_label_a"]) for b in bins if b["count"])
        return {"pairs": n, "bins": bins, "ece": ece, "brier": self.brier / n}

    def scores(self) -> dict:
        """pairs, accuracy, log_loss, brier, ece (None without pairs)."""
        n, cal = self.pairs, self.reliability()
        return {"pairs": n, "accuracy": _share(self.correct, n), "log_loss": _share(self.log_loss, n),
                "brier": cal and cal["brier"], "ece": cal and cal["ece"]}


class _Tally:
    """Everything the figures need, accumulated row by row (memory flat in the row count)."""

    def __init__(self) -> None:
        self.pairs = self.unjudged = self.suspects = 0
        self.winners: Counter = Counter()
        self.causes: Counter = Counter()
        self.both = self.consistent = 0
        self.order_verdicts = {"ab": Counter(), "ba": Counter()}
        self.tokens = Counter()
        self.hist = [0] * HIST_BINS
        self.p_sum = 0.0
        self.labelled = self.agree = 0
        self.by_subset: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # labelled, agree
        self.points: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])  # RewardBench
        self.cal = ProbabilityTally()
        self.pending: tuple[list, list] = ([], [])  # p_a, label is A: added to `cal` a batch at a time
        self.run: dict[str, set] = {k: set() for k in _RUN_KEYS}
        self.mass = [0] * HIST_BINS  # logprob mode: the verdict labels' probability, per order
        self.mass_sum = 0.0

    def add(self, row: dict) -> None:
        self.pairs += 1
        self.suspects += bool(row["injection_suspect"])
        for order in ("ab", "ba"):
            for kind in ("prompt", "completion"):
                self.tokens[kind] += row[f"{order}_{kind}_tokens"] or 0
            if row[f"{order}_verdict"] is not None:
                self.order_verdicts[order][row[f"{order}_verdict"]] += 1
            if row[f"{order}_label_mass"] is not None:
                self.mass[_bin(row[f"{order}_label_mass"], HIST_BINS)] += 1
                self.mass_sum += row[f"{order}_label_mass"]
        for key in _RUN_KEYS:
            if row[key] is not None:
                self.run[key].add(row[key])
        winner = row["winner"]
        if winner is None:  # a dry run's unjudged pair
            self.unjudged += 1
            return
        self.winners[winner] += 1
        label, subset = row["label"], row["subset"]
        if label in ("A", "B") and subset is not None:
            self.points[subset][0] += pair_points(winner, label)
            self.points[subset][1] += 1
        if winner == "error":
            self.causes[error_cause(row["error"])] += 1
            return
        if row["consistent"] is not None:
            self.both += 1
            self.consistent += bool(row["consistent"])
        p_a = row["p_a"]
        if p_a is not None:
            self.hist[_bin(p_a, HIST_BINS)] += 1
            self.p_sum += p_a
        if label in ("A", "B"):
            self.labelled += 1
            self.agree += winner == label
            tally = self.by_subset["(none)" if subset is None else subset]
            tally[0] += 1
            tally[1] += winner == label
            if p_a is not None:
                self.pending[0].append(p_a)
                self.pending[1].append(label == "A")

    def end_batch(self) -> None:
        self.cal.add(*self.pending)
        self.pending = ([], [])

    def figures(self, uri: str, summary: dict | None, has_subset: bool) -> dict:
        judged = self.pairs - self.unjudged
        ab, ba = self.order_verdicts["ab"], self.order_verdicts["ba"]
        decisive = ab["A"] + ab["B"] + ba["A"] + ba["B"]
        return {
            "output": uri,
            "pairs": self.pairs,
            "unjudged": self.unjudged,
            "winners": {k: self.winners.get(k, 0) for k in WINNERS},
            "winner_shares": {k: _share(self.winners.get(k, 0), judged) for k in WINNERS},
            "errors": {"count": self.winners.get("error", 0),
                       "rate": _share(self.winners.get("error", 0), judged),
                       "causes": dict(self.causes.most_common(50))},
            # rows whose prompt or responses talk to the judge (judges/injection.py)
            "injection_suspects": {"count": self.suspects, "rate": _share(self.suspects, self.pairs)},
            "position": {
                "pairs_both_orders": self.both,
                "consistency": _share(self.consistent, self.both),
                "order_verdicts": {o: {k: c.get(k, 0) for k in ("A", "B", "tie")}
                                   for o, c in self.order_verdicts.items()},
                # in order ab the first response shown is A; in ba it is B (original frame)
                "first_position_preference": _share(ab["A"] + ba["B"], decisive),
            },
            "labels": self._labels(has_subset),
            "calibration": self.cal.reliability(),
            "p_a_histogram": self._histogram(),
            "label_mass": self._label_mass(),
            "tokens": {"prompt": self.tokens["prompt"], "completion": self.tokens["completion"],
                       "prompt_per_pair": _share(self.tokens["prompt"], judged),
                       "completion_per_pair": _share(self.tokens["completion"], judged)},
            "throughput": _throughput(summary, self.tokens),
            "run": {k: sorted(map(str, v)) for k, v in self.run.items()},
            "protocol": protocol(self.run["judge"], self.run["mode"]),
            "rewardbench": self._rewardbench(),
        }

    def _rewardbench(self) -> dict | None:
        scores = rewardbench_scores(self.points)
        if scores:
            scores["comparable_to_leaderboard"] = protocol(self.run["judge"], self.run["mode"])["comparable_to_leaderboard"]
        return scores

    def _labels(self, has_subset: bool) -> dict | None:
        if not self.labelled:
            return None
        by_subset = None
        if has_subset:
            by_subset = {s: {"labelled": n, "agreement": a / n} for s, (n, a) in sorted(self.by_subset.items())}
        return {"labelled_pairs": self.labelled, "agreement": self.agree / self.labelled,
                "by_subset": by_subset}

    def _label_mass(self) -> dict | None:
        """How much next-token probability the verdict labels had (logprob mode only)."""
        n = sum(self.mass)
        if not n:
            return None
        return {"orders": n, "mean": self.mass_sum / n, "edges": [i / HIST_BINS for i in range(HIST_BINS + 1)],
                "counts": list(self.mass), "share_under_0.5": sum(self.mass[: HIST_BINS // 2]) / n,
                "share_under_0.1": sum(self.mass[: HIST_BINS // 10]) / n}

    def _histogram(self) -> dict:
        n = sum(self.hist)
        return {"edges": [i / HIST_BINS for i in range(HIST_BINS + 1)], "counts": list(self.hist),
                "pairs": n, "mean": _share(self.p_sum, n)}


def _throughput(summary: dict | None, tokens: Counter) -> dict | None:
    """From summary.json: the last run's wall time and rate (a resumed run judged only part)."""
    if not summary or not summary.get("seconds"):
        return None
    run = summary.get("this_run") or {}
    whole = not summary.get("units_skipped")  # the last run judged every pair: tokens/s is meaningful
    seconds = summary["seconds"]
    return {"seconds": seconds, "pairs_this_run": run.get("pairs", summary.get("pairs")),
            "pairs_per_second": summary.get("pairs_per_second"),
            "tokens_per_second": (tokens["prompt"] + tokens["completion"]) / seconds if whole else None}


def compute_figures(verdicts: Verdicts) -> dict:
    tally = _Tally()
    for rows in verdicts.batches(_COLUMNS):
        for values in zip(*(rows[c] for c in _COLUMNS)):
            tally.add(dict(zip(_COLUMNS, values)))
        tally.end_batch()
    return tally.figures(verdicts.loc.uri, verdicts.summary, "subset" in verdicts.columns)
