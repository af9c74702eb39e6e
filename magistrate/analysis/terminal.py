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
    text = _table(rows)
    rb = fig["rewardbench"]
    if rb:
        comparable = ("comparable to RewardBench's leaderboard" if rb["comparable_to_leaderboard"]
                      else f"not comparable to RewardBench's leaderboard: {fig['protocol']['why']}")
        text += f"\n\nRewardBench ({comparable})\n" + _table(
            [(section, num(score, 2)) for section, score in rb["sections"].items()]
            + [("Score", num(rb["score"], 2) if rb["score"] is not None else "n/a (not every section present)")])
    return text


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
