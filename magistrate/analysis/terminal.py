"""Plain-text tables for the terminal: the report's summary and the leaderboard."""

from __future__ import annotations


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def num(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def report_text(fig: dict) -> str:
    w, share = fig["winners"], fig["winner_shares"]
    pos, tokens = fig["position"], fig["tokens"]
    rows = [
        ("output", fig["output"]),
        ("judge / model", f"{', '.join(fig['run']['judge']) or 'n/a'} / {', '.join(fig['run']['model']) or 'n/a'}"),
        ("protocol", fig["protocol"]["described"] or "n/a"),
        ("pairs", str(fig["pairs"]) + (f" ({fig['unjudged']} unjudged)" if fig["unjudged"] else "")),
        ("winners A / B / tie", " / ".join(f"{w[k]} ({pct(share[k])})" for k in ("A", "B", "tie"))),
        ("errors", f"{w['error']} ({pct(fig['errors']['rate'])})"),
        ("injection suspects", f"{fig['injection_suspects']['count']} ({pct(fig['injection_suspects']['rate'])})"),
        ("position consistency", f"{pct(pos['consistency'])} of {pos['pairs_both_orders']}"),
        ("first-position preference", pct(pos["first_position_preference"])),
    ]
    labels = fig["labels"]
    if labels:
        rows.append(("agreement with labels", f"{pct(labels['agreement'])} of {labels['labelled_pairs']}"))
        for subset, s in (labels["by_subset"] or {}).items():
            rows.append((f"  {subset}", f"{pct(s['agreement'])} of {s['labelled']}"))
    else:
        rows.append(("agreement with labels", "not available (no A/B labels)"))
    cal = fig["calibration"]
    rows.append(("calibration (ECE / Brier)",
                 f"{num(cal['ece'], 3)} / {num(cal['brier'], 3)} over {cal['pairs']}" if cal else "not available"))
    rows.append(("mean p_a", num(fig["p_a_histogram"]["mean"], 3)))
    mass = fig.get("label_mass")
    if mass:
        rows.append(("verdict label mass", f"mean {num(mass['mean'], 3)}; under 0.5 in {pct(mass['share_under_0.5'])} "
                                           f"of {mass['orders']} orders"))
    rows.append(("tokens: prompt / completion", f"{tokens['prompt']} / {tokens['completion']}"))
    tp = fig["throughput"]
    rows.append(("throughput", f"{tp['pairs_per_second']} pairs/s over {tp['seconds']} s" if tp else "not available"))
    for cause, count in fig["errors"]["causes"].items():
        rows.append((f"error x{count}", cause))
    calibrated = fig.get("calibrated")
    if calibrated:
        rows.append((f"calibrated ({calibrated['method']}), over {calibrated['after']['pairs']} labelled",
                     "before -> after"))
        rows += [(f"  {k}", v) for k, v in scores_rows(calibrated["before"], calibrated["after"])]
        decisions = calibrated["decisions"]
        if decisions:
            threshold = "none passed" if decisions["threshold"] is None else f"{decisions['threshold']:.3f}"
            rows.append(("decided (confidence >= threshold)",
                         f"{decisions['decided']} ({pct(decisions['coverage'])}) at {threshold}; agreement "
                         f"{pct(decisions['agreement'])} of {decisions['labelled_decided']} labelled "
                         f"(target {decisions['target']:g}, risk {decisions['risk']:g})"))
    text = _table(rows)
    rb = fig["rewardbench"]
    if rb:
        comparable = ("comparable to RewardBench's leaderboard" if rb["comparable_to_leaderboard"]
                      else f"not comparable to RewardBench's leaderboard: {fig['protocol']['why']}")
        text += f"\n\nRewardBench ({comparable})\n" + _table(
            [(section, num(score, 2)) for section, score in rb["sections"].items()]
            + [("Score", num(rb["score"], 2) if rb["score"] is not None else "n/a (not every section present)")])
    return text


_SCORES = (("accuracy", "accuracy", 3), ("log-loss", "log_loss", 4), ("Brier", "brier", 4), ("ECE", "ece", 4))


def scores_rows(before: dict, after: dict) -> list[tuple[str, str]]:
    """accuracy, log-loss, Brier and ECE before and after a calibration map, one row each."""
    return [(name, f"{num(before[key], digits)} -> {num(after[key], digits)}") for name, key, digits in _SCORES]


def calibration_text(calibration) -> str:
    """What `magistrate calibrate` fitted: the map, the figures before and after, the decision."""
    cal = calibration
    parameters = ", ".join(f"{k} {v:.4g}" for k, v in cal.parameters.items())
    cv = ", ".join(f"{k} {v:.4f}" for k, v in cal.cv_log_loss.items())
    left_out = ", ".join(f"{n} {why}" for why, n in cal.excluded.items()) or "none"
    rows = [("method", f"{cal.method} ({parameters})"),
            ("labelled pairs", f"{cal.n_labelled} (left out: {left_out})"),
            (f"{cal.folds}-fold CV log-loss", cv),
            *scores_rows(cal.before.model_dump(), cal.after.model_dump())]
    d = cal.decision
    if d is not None:
        rows.append((f"decision (agreement >= {d.target:g}, risk {d.risk:g})", d.message))
        if d.threshold is not None:
            rows.append(("threshold / coverage", f"{d.threshold:.3f} / {pct(d.coverage)} ({d.decided} of {d.pairs})"))
    return "figures before -> after calibration, on the labelled pairs (in-sample)\n" + _table(rows)


def leaderboard_text(rows: list[dict]) -> str:
    width = max(len("model"), *(len(r["model"]) for r in rows))
    lines = [f"{'rank':>4}  {'model'.ljust(width)}  {'rating':>7}  {'95% CI':>15}  {'battles':>7}  "
             f"{'W/L/T':>14}  win rate"]
    for r in rows:
        ci = f"{r['lower']:.1f}..{r['upper']:.1f}"
        wlt = f"{r['wins']}/{r['losses']}/{r['ties']}"
        lines.append(f"{r['rank']:>4}  {r['model'].ljust(width)}  {r['rating']:7.1f}  {ci:>15}  "
                     f"{r['battles']:>7}  {wlt:>14}  {pct(r['win_rate'])}")
    return "\n".join(lines)
