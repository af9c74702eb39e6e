"""The report as one self-contained HTML file: inline CSS and inline SVG plots, nothing
fetched from the network. Every figure cell carries an id (docs/analysis.md)."""

from __future__ import annotations

from html import escape

from magistrate.analysis.terminal import num, pct

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0} th,td{padding:.2em .8em;text-align:left;border-bottom:1px solid #eee}
td.n{text-align:right;font-variant-numeric:tabular-nums} .na{color:#888;font-style:italic}
svg.plot{display:block;margin:.5em 0;background:#fafafa}
"""
_BAR = "#4878a8"
_COLORS = {"A": "#4878a8", "B": "#e08a3c", "tie": "#8c8c8c", "error": "#c0392b"}


def _row(label: str, value: str, key: str) -> str:
    return f'<tr><th>{escape(label)}</th><td class="n" id="{key}">{escape(value)}</td></tr>'


def _na(why: str) -> str:
    return f'<p class="na">Not available: {escape(why)}.</p>'


def bar_svg(items: list[tuple[str, float, str, str]], plot_id: str, scale: float | None = None) -> str:
    """Horizontal bars: (label, value, text, colour) each; bars scale to `scale` or the largest value."""
    top = scale or max((v for _, v, _, _ in items), default=0) or 1
    row, left, width = 26, 190, 420
    parts = [f'<svg class="plot" id="{plot_id}" xmlns="http://www.w3.org/2000/svg" '
             f'width="{left + width + 110}" height="{row * len(items) + 10}">']
    for i, (label, value, text, colour) in enumerate(items):
        y = 5 + i * row
        parts.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end" font-size="13">{escape(label)}</text>'
                     f'<rect class="bar" x="{left}" y="{y + 3}" width="{width * value / top:.1f}" height="18" '
                     f'fill="{colour}"/><text x="{left + width * value / top + 6:.1f}" y="{y + 16}" '
                     f'font-size="12">{escape(text)}</text>')
    return "".join(parts) + "</svg>"


def _axes(x0: int, y0: int, w: int, h: int, xlabel: str, ylabel: str, yticks: list[tuple[float, str]]) -> str:
    parts = [f'<line x1="{x0}" y1="{y0}" x2="{x0 + w}" y2="{y0}" stroke="#333"/>'
             f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 - h}" stroke="#333"/>']
    for t in (0, 0.25, 0.5, 0.75, 1):
        x = x0 + t * w
        parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}" stroke="#333"/>'
                     f'<text x="{x:.1f}" y="{y0 + 17}" text-anchor="middle" font-size="11">{t:g}</text>')
    for frac, text in yticks:
        y = y0 - frac * h
        parts.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0}" y2="{y:.1f}" stroke="#333"/>'
                     f'<text x="{x0 - 7}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{text}</text>')
    parts.append(f'<text x="{x0 + w / 2}" y="{y0 + 34}" text-anchor="middle" font-size="12">{xlabel}</text>'
                 f'<text x="14" y="{y0 - h / 2}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 14 {y0 - h / 2})">{ylabel}</text>')
    return "".join(parts)


def histogram_svg(hist: dict, plot_id: str) -> str:
    counts, edges = hist["counts"], hist["edges"]
    x0, y0, w, h = 60, 230, 500, 200
    top = max(counts) or 1
    parts = [f'<svg class="plot" id="{plot_id}" xmlns="http://www.w3.org/2000/svg" width="600" height="280">',
             _axes(x0, y0, w, h, "p_a (probability that A is better)", "pairs",
                   [(0, "0"), (0.5, f"{top / 2:g}"), (1, str(top))])]
    for count, lo, hi in zip(counts, edges, edges[1:]):
        bh = h * count / top
        parts.append(f'<rect class="bar" x="{x0 + lo * w + 1:.1f}" y="{y0 - bh:.1f}" width="{(hi - lo) * w - 2:.1f}" '
                     f'height="{bh:.1f}" fill="{_BAR}"><title>{lo:g}-{hi:g}: {count}</title></rect>')
    return "".join(parts) + "</svg>"


def reliability_svg(cal: dict, plot_id: str, xlabel: str = "mean p_a in bin") -> str:
    x0, y0, s = 60, 330, 300
    ticks = [(t, f"{t:g}") for t in (0, 0.25, 0.5, 0.75, 1)]
    parts = [f'<svg class="plot" id="{plot_id}" xmlns="http://www.w3.org/2000/svg" width="400" height="380">',
             _axes(x0, y0, s, s, xlabel, "share labelled A", ticks),
             f'<line x1="{x0}" y1="{y0}" x2="{x0 + s}" y2="{y0 - s}" stroke="#999" stroke-dasharray="4 4"/>']
    points = [(b["mean_p_a"], b["share_label_a"], b["count"]) for b in cal["bins"] if b["count"]]
    line = " ".join(f"{x0 + p * s:.1f},{y0 - q * s:.1f}" for p, q, _ in points)
    parts.append(f'<polyline points="{line}" fill="none" stroke="{_BAR}" stroke-width="2"/>')
    biggest = max(c for _, _, c in points)
    for p, q, count in points:
        r = 3 + 6 * (count / biggest) ** 0.5
        parts.append(f'<circle class="point" cx="{x0 + p * s:.1f}" cy="{y0 - q * s:.1f}" r="{r:.1f}" '
                     f'fill="{_BAR}"><title>{count} pairs: p_a {p:.3f}, labelled A {q:.3f}</title></circle>')
    return "".join(parts) + "</svg>"


def _winners(fig: dict) -> str:
    w, share = fig["winners"], fig["winner_shares"]
    items = [(k, w[k], f"{w[k]} ({pct(share[k])})", _COLORS[k]) for k in ("A", "B", "tie", "error")]
    rows = "".join(_row(f"winner {k}", str(w[k]), f"winners-{k}") for k in ("A", "B", "tie", "error"))
    return f"<h2>Winners</h2>{bar_svg(items, 'plot-winners')}<table>{rows}</table>"


def _errors(fig: dict) -> str:
    e = fig["errors"]
    html = (f"<h2>Errors</h2><table>{_row('error rate', pct(e['rate']), 'error-rate')}"
            f"{_row('error rows', str(e['count']), 'error-count')}"
            f"{_row('injection suspects', str(fig['injection_suspects']['count']), 'injection-suspects')}</table>")
    if e["causes"]:
        html += "<table><tr><th>cause (first 80 characters)</th><th>rows</th></tr>" + "".join(
            f'<tr><td>{escape(c)}</td><td class="n">{n}</td></tr>' for c, n in e["causes"].items()) + "</table>"
    return html


def _position(fig: dict) -> str:
    pos = fig["position"]
    ov = pos["order_verdicts"]
    html = (f"<h2>Position bias</h2><table>"
            f"{_row('position consistency', pct(pos['consistency']), 'position-consistency')}"
            f"{_row('pairs judged in both orders', str(pos['pairs_both_orders']), 'pairs-both-orders')}"
            f"{_row('first-position preference', pct(pos['first_position_preference']), 'first-position')}"
            "</table>")
    first = ov["ab"]["A"] + ov["ba"]["B"]
    second = ov["ab"]["B"] + ov["ba"]["A"]
    if first + second:
        html += bar_svg([("chose the first shown", first, str(first), _COLORS["A"]),
                         ("chose the second shown", second, str(second), _COLORS["B"])], "plot-position")
    return html


def _labels(fig: dict) -> str:
    labels = fig["labels"]
    if not labels:
        return "<h2>Agreement with labels</h2>" + _na("the verdicts have no A/B labels")
    html = ("<h2>Agreement with labels</h2><table>"
            f"{_row('agreement (a tie is a miss)', pct(labels['agreement']), 'label-agreement')}"
            f"{_row('labelled pairs', str(labels['labelled_pairs']), 'labelled-pairs')}</table>")
    if labels["by_subset"]:
        subsets = labels["by_subset"]
        html += bar_svg([(s, v["agreement"], f"{pct(v['agreement'])} of {v['labelled']}", _BAR)
                         for s, v in subsets.items()], "plot-subsets", scale=1.0)
        html += "<table><tr><th>subset</th><th>agreement</th><th>labelled</th></tr>" + "".join(
            f'<tr><td>{escape(s)}</td><td class="n" id="agreement-{escape(s)}">{pct(v["agreement"])}</td>'
            f'<td class="n">{v["labelled"]}</td></tr>' for s, v in subsets.items()) + "</table>"
    return html


def _calibration(fig: dict) -> str:
    cal = fig["calibration"]
    if not cal:
        return "<h2>Calibration</h2>" + _na("no pair has both p_a and an A/B label")
    return ("<h2>Calibration</h2><p>Reliability diagram: pairs binned by p_a; a calibrated judge "
            "lies on the diagonal.</p>" + reliability_svg(cal, "plot-calibration") +
            f"<table>{_row('expected calibration error', num(cal['ece'], 3), 'ece')}"
            f"{_row('Brier score', num(cal['brier'], 3), 'brier')}"
            f"{_row('pairs', str(cal['pairs']), 'calibration-pairs')}</table>")


def coverage_svg(curve: list[dict], plot_id: str) -> str:
    """Agreement (y) against coverage (x) over thresholds; the chosen threshold ringed."""
    x0, y0, s = 60, 330, 300
    points = [(c["coverage"], c["agreement"], c) for c in curve
              if c["coverage"] is not None and c["agreement"] is not None]
    ticks = [(t, f"{t:g}") for t in (0, 0.25, 0.5, 0.75, 1)]
    parts = [f'<svg class="plot" id="{plot_id}" xmlns="http://www.w3.org/2000/svg" width="400" height="380">',
             _axes(x0, y0, s, s, "coverage (share of pairs decided)", "agreement with labels", ticks)]
    line = " ".join(f"{x0 + x * s:.1f},{y0 - y * s:.1f}" for x, y, _ in points)
    parts.append(f'<polyline points="{line}" fill="none" stroke="{_BAR}" stroke-width="2"/>')
    for x, y, c in points:
        ring = ' stroke="#c0392b" stroke-width="3"' if c["chosen"] else ""
        parts.append(f'<circle class="point{" chosen" if c["chosen"] else ""}" cx="{x0 + x * s:.1f}" '
                     f'cy="{y0 - y * s:.1f}" r="{6 if c["chosen"] else 3}" fill="{_BAR}"{ring}><title>confidence >= '
                     f'{c["threshold"]:.3f}: coverage {x:.3f}, agreement {y:.3f}</title></circle>')
    return "".join(parts) + "</svg>"


def _calibrated(fig: dict) -> str:
    cal = fig.get("calibrated")
    if not cal:
        return ""
    parameters = ", ".join(f"{k} {v:.4g}" for k, v in cal["parameters"].items())
    before, after = cal["before"], cal["after"]
    rows = "".join(
        f'<tr><th>{name}</th><td class="n" id="cal-{key}-before">{num(before[key], 4)}</td>'
        f'<td class="n" id="cal-{key}-after">{num(after[key], 4)}</td></tr>'
        for name, key in (("accuracy", "accuracy"), ("log-loss", "log_loss"), ("Brier score", "brier"),
                          ("expected calibration error", "ece")))
    html = (f"<h2>Calibrated confidence</h2><p>Map: {escape(cal['method'])} scaling ({escape(parameters)}), "
            f"fitted on {cal['fitted_on']} labelled pairs; figures over this output's "
            f"{after['pairs']} labelled pairs.</p>"
            f"<table><tr><th></th><th>p_a</th><th>p_a_calibrated</th></tr>{rows}</table>")
    if fig["calibration"] and cal["reliability"]:
        html += ('<div style="display:flex;gap:1em"><div><p>Raw p_a</p>'
                 + reliability_svg(fig["calibration"], "plot-reliability-raw") + "</div><div><p>p_a_calibrated</p>"
                 + reliability_svg(cal["reliability"], "plot-reliability-calibrated", "mean p_a_calibrated in bin")
                 + "</div></div>")
    d = cal["decisions"]
    if d is None:
        return html + _na("decisions: the calibration file has no decision threshold (calibrate --target-agreement)")
    threshold = "none passed the test" if d["threshold"] is None else f"{d['threshold']:.3f}"
    html += (f"<h2>Decisions</h2><p>Verdicts with calibrated confidence at or above the threshold are "
             f"decided: with probability at least {1 - d['risk']:g}, their agreement with labels is at least "
             f"{d['target']:g} (chosen on the calibration set by fixed-sequence testing).</p><table>"
             f"{_row('threshold', threshold, 'decision-threshold')}"
             f"{_row('decided pairs', str(d['decided']), 'decided')}"
             f"{_row('coverage', pct(d['coverage']), 'decided-coverage')}"
             f"{_row('agreement of the decided (labelled)', pct(d['agreement']), 'decided-agreement')}</table>")
    curve = "".join(
        f'<tr{" class=chosen" if c["chosen"] else ""}><td class="n">{c["threshold"]:.3f}{" (chosen)" if c["chosen"] else ""}'
        f'</td><td class="n">{pct(c["coverage"])}</td><td class="n">{pct(c["agreement"])}</td>'
        f'<td class="n">{c["labelled"]}</td></tr>' for c in cal["curve"])
    return (html + "<p>Coverage against agreement, over thresholds on the calibrated confidence:</p>"
            + coverage_svg(cal["curve"], "plot-coverage")
            + f'<table id="coverage-table"><tr><th>confidence at least</th><th>coverage</th><th>agreement</th>'
              f"<th>labelled</th></tr>{curve}</table>")


def _histogram(fig: dict) -> str:
    hist = fig["p_a_histogram"]
    if not hist["pairs"]:
        return "<h2>p_a histogram</h2>" + _na("no verdict has a p_a")
    return (f"<h2>p_a histogram</h2>{histogram_svg(hist, 'plot-histogram')}"
            f"<table>{_row('mean p_a', num(hist['mean'], 3), 'mean-p-a')}</table>")


def _tokens(fig: dict) -> str:
    t, tp = fig["tokens"], fig["throughput"]
    rows = [_row("prompt tokens", str(t["prompt"]), "prompt-tokens"),
            _row("completion tokens", str(t["completion"]), "completion-tokens"),
            _row("prompt tokens per pair", num(t["prompt_per_pair"]), "prompt-per-pair"),
            _row("completion tokens per pair", num(t["completion_per_pair"]), "completion-per-pair")]
    if tp:
        rows += [_row("wall time of the last run (s)", str(tp["seconds"]), "seconds"),
                 _row("pairs/s", str(tp["pairs_per_second"]), "pairs-per-second"),
                 _row("tokens/s", num(tp["tokens_per_second"]), "tokens-per-second")]
    html = f"<h2>Tokens and throughput</h2><table>{''.join(rows)}</table>"
    return html if tp else html + _na("throughput: the output has no summary.json")


def _rewardbench(fig: dict) -> str:
    rb = fig["rewardbench"]
    if not rb:
        return ""
    rows = "".join(_row(section, num(score, 2), f"rb-{section.lower().replace(' ', '-')}")
                   for section, score in rb["sections"].items())
    rows += _row("Score", num(rb["score"], 2), "rb-score")
    subsets = "".join(f'<tr><td>{escape(s)}</td><td class="n">{pct(v["accuracy"])}</td>'
                      f'<td class="n">{v["pairs"]}</td></tr>' for s, v in rb["subsets"].items())
    note = ("" if not rb["missing_subsets"] else
            f'<p class="na">Subsets not in this output: {escape(", ".join(rb["missing_subsets"]))}.</p>')
    comparable = ("Comparable to RewardBench's leaderboard: the same prompt and protocol."
                  if rb["comparable_to_leaderboard"] else
                  f"Not comparable to RewardBench's leaderboard: {escape(fig['protocol']['why'])}.")
    return (f'<h2>RewardBench</h2><p id="rb-comparable">{comparable}</p>'
            "<p>Sections weighted by RewardBench's EXAMPLE_COUNTS "
            "(math-prm counts as 984); a tie or error scores 0.5.</p>"
            f"<table>{rows}</table>{note}<table><tr><th>subset</th><th>accuracy</th><th>pairs</th></tr>"
            f"{subsets}</table>")


def report_html(fig: dict) -> str:
    run = fig["run"]
    head = "".join(_row(k, ", ".join(run[k]) or "n/a", f"run-{k}") for k in ("judge", "model", "mode", "order"))
    body = "".join(part(fig) for part in (_winners, _errors, _position, _labels, _calibration, _calibrated,
                                          _histogram, _tokens, _rewardbench))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>magistrate report: '
            f"{escape(fig['output'])}</title><style>{_CSS}</style></head><body>"
            f"<h1>magistrate report</h1><p>{escape(fig['output'])}</p><table>"
            f"{_row('pairs', str(fig['pairs']), 'pairs')}{head}</table>{body}</body></html>\n")
