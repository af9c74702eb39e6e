"""The report's figures recomputed from the rows in plain Python, independently of
magistrate.analysis (the bins use math.floor; the synthetic p_a never sit on an edge)."""

from __future__ import annotations

import math
from collections import Counter

from tests.analysis.conftest import CAUSE_KINDS


def expected_figures(rows: list[dict], seconds: float | None = None) -> dict:
    judged = [r for r in rows if r.get("winner") is not None]
    ok = [r for r in judged if r["winner"] != "error"]
    winners = Counter(r["winner"] for r in judged)
    both = [r for r in ok if r.get("consistent") is not None]
    ab = Counter(r.get("ab_verdict") for r in rows)
    ba = Counter(r.get("ba_verdict") for r in rows)
    labelled = [r for r in ok if r.get("label") in ("A", "B")]
    subsets = sorted({r.get("subset") for r in labelled})
    cal = [r for r in labelled if r.get("p_a") is not None]
    bins = []
    for b in range(10):
        inside = [r for r in cal if math.floor(r["p_a"] * 10) == b]
        bins.append((len(inside), sum(r["p_a"] for r in inside) / len(inside) if inside else None,
                     sum(r["label"] == "A" for r in inside) / len(inside) if inside else None))
    with_p = [r["p_a"] for r in ok if r.get("p_a") is not None]
    tokens = {kind: sum((r.get(f"ab_{kind}_tokens") or 0) + (r.get(f"ba_{kind}_tokens") or 0) for r in rows)
              for kind in ("prompt", "completion")}
    return {
        "winners": {k: winners[k] for k in ("A", "B", "tie", "error")},
        "injection_suspects": sum(bool(r.get("injection_suspect")) for r in rows),
        "error_rate": winners["error"] / len(judged),
        "causes": Counter(CAUSE_KINDS[r["error"]] for r in judged if r["winner"] == "error"),
        "consistency": sum(r["consistent"] for r in both) / len(both),
        "pairs_both_orders": len(both),
        "first_position": (ab["A"] + ba["B"]) / (ab["A"] + ab["B"] + ba["A"] + ba["B"]),
        "agreement": sum(r["winner"] == r["label"] for r in labelled) / len(labelled) if labelled else None,
        "labelled": len(labelled),
        "by_subset": {s: sum(r["winner"] == r["label"] for r in labelled if r.get("subset") == s)
                      / sum(r.get("subset") == s for r in labelled) for s in subsets},
        "calibration_bins": bins,
        "ece": sum(n / len(cal) * abs(p - y) for n, p, y in bins if n) if cal else None,
        "brier": sum((r["p_a"] - (r["label"] == "A")) ** 2 for r in cal) / len(cal) if cal else None,
        "histogram": [sum(math.floor(p * 20) == b for p in with_p) for b in range(20)],
        "mean_p_a": sum(with_p) / len(with_p),
        "tokens": tokens,
        "tokens_per_second": (tokens["prompt"] + tokens["completion"]) / seconds if seconds else None,
    }
