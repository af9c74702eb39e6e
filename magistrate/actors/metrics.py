"""magistrate's metrics, exported through Ray's own (`ray.util.metrics`): each node's
metrics agent serves them on its Prometheus endpoint beside Ray's, so batch actors and
Serve replicas show on the same dashboards (docs/metrics.md; deploy/grafana-magistrate.json).

Ray prefixes every application metric with `ray_` and a counter with `_total`:
`magistrate_pairs_judged` is scraped as `ray_magistrate_pairs_judged_total`. A metric is
built in the process that records it, on first use, so importing this module costs nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from magistrate.pairs import INVALID

# name -> (kind, description, tag keys, extra arguments): the documented list (docs/metrics.md).
METRICS: dict[str, tuple[str, str, tuple[str, ...], dict]] = {
    "magistrate_pairs_judged": ("Counter", "Pairs a judge host or replica gave a verdict row (error rows included; "
                                "a dry run's counted rows too)", ("judge",), {}),
    "magistrate_error_rows": ("Counter", "Error rows, by cause (input, prompt, prompt_too_long, verdict, engine)",
                              ("judge", "cause"), {}),
    "magistrate_tokens": ("Counter", "Engine tokens, by kind (prompt, completion)", ("judge", "kind"), {}),
    "magistrate_engine_restarts": ("Counter", "Judge engines rebuilt after a failure", ("judge",), {}),
    "magistrate_units_retried": ("Counter", "Work units a batch job judged again in a later round", ("judge",), {}),
    "magistrate_request_latency_seconds": ("Histogram", "Online requests judged, from body read to verdicts",
                                           ("judge", "route"),
                                           {"boundaries": [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]}),
    "magistrate_admission_rejections": ("Counter", "Online requests refused by admission (503 busy, 413 too big)",
                                        ("judge", "status"), {}),
}
_BUILT: dict[str, Any] = {}


def metric(name: str):
    if name not in _BUILT:
        from ray.util import metrics

        kind, description, tags, extra = METRICS[name]
        _BUILT[name] = getattr(metrics, kind)(name, description=description, tag_keys=tags, **extra)
    return _BUILT[name]


def add(name: str, value: float, **tags: str) -> None:
    if value:
        metric(name).inc(value, tags=tags)


def error_kind(pair: dict, row: dict) -> str:
    """The cause of one error row, one of a few (a metric's tag must not grow with the
    messages; summary.json keeps the detailed causes)."""
    if pair.get(INVALID):
        return "input"
    if row.get("written_off"):
        return "engine"
    message = row.get("error") or ""
    if "prompt too long" in message:
        return "prompt_too_long"
    if "prompt could not be built" in message:
        return "prompt"
    return "verdict"


def record_rows(judge: str, rows: list[dict], pairs: list[dict] | None = None) -> None:
    """One batch's verdict rows (and the pairs they are for): pairs, error rows by cause, tokens."""
    add("magistrate_pairs_judged", len(rows), judge=judge)
    pairs = pairs or [{}] * len(rows)
    causes = Counter(error_kind(p, r) for p, r in zip(pairs, rows) if r.get("winner") == "error")
    for cause, n in causes.items():
        add("magistrate_error_rows", n, judge=judge, cause=cause)
    for kind in ("prompt", "completion"):
        tokens = sum(r.get(f"{o}_{kind}_tokens") or 0 for r in rows for o in ("ab", "ba"))
        add("magistrate_tokens", tokens, judge=judge, kind=kind)
