"""Combining the orders a pair was judged in into one verdict.

The rule (docs/output-schema.md):
- each order's verdict and probability are first mapped back to the original frame
  (in order "ba" the judge saw B first, so its "A" means the original B);
- p_a is the mean, over the orders judged, of P(original A is better);
- winner follows MT-Bench's conservative rule: A or B only when every order says so,
  otherwise tie; `consistent` says whether the orders agree (null with one order);
- if any order failed, the pair is an error row naming the order and the cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from magistrate.judges.profile import Verdict
from magistrate.judges.render import Order

ORDERS: tuple[Order, ...] = ("ab", "ba")
PER_ORDER_FIELDS = (
    "verdict", "p_a", "rationale", "raw", "prompt_tokens", "completion_tokens", "error", "label_mass", "p_source"
)
_SWAP = {"A": "B", "B": "A", "tie": "tie"}


@dataclass(frozen=True)
class OrderResult:
    """One order's outcome, in the frame the judge saw (A = the response shown first)."""

    order: Order
    verdict: Verdict | None
    p_first: float | None
    rationale: str | None = None
    raw: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    # logprob mode: the next-token probability the verdict labels had together, before
    # p_first renormalised it away (how much the model wanted to answer at all)
    label_mass: float | None = None
    # where p_first came from: "logprobs" (the label tokens' log-probabilities, logprob
    # mode or generate mode at the verdict's token) or "verdict" (1, ½, 0); None on error
    p_source: str | None = None

    def original_frame(self) -> tuple[Verdict | None, float | None]:
        if self.order == "ab" or self.error:
            return self.verdict, self.p_first
        return (
            _SWAP[self.verdict] if self.verdict else None,
            None if self.p_first is None else 1.0 - self.p_first,
        )


def error_row(message: str, written_off: bool = False) -> dict[str, Any]:
    """The verdict fields of a pair that was not judged: a bad input row (final), or one
    its host gave up on (`written_off`: --resume judges it again)."""
    return dict(combine([]), error=message, written_off=written_off, injection_suspect=None)


def combine(results: list[OrderResult]) -> dict[str, Any]:
    """Output fields for one pair: winner, p_a, consistent, error and `<order>_*` fields."""
    row: dict[str, Any] = {f"{o}_{f}": None for o in ORDERS for f in PER_ORDER_FIELDS}
    row["written_off"] = False  # only a host that gives up on its engine or unit sets it
    framed = []
    for result in results:
        verdict, p_a = result.original_frame()
        framed.append((verdict, p_a))
        row.update(
            {
                f"{result.order}_verdict": verdict,
                f"{result.order}_p_a": p_a,
                f"{result.order}_rationale": result.rationale,
                f"{result.order}_raw": result.raw,
                f"{result.order}_prompt_tokens": result.prompt_tokens,
                f"{result.order}_completion_tokens": result.completion_tokens,
                f"{result.order}_error": result.error,
                f"{result.order}_label_mass": result.label_mass,
                f"{result.order}_p_source": result.p_source,
            }
        )
    errors = [f"order {r.order}: {r.error}" for r in results if r.error]
    if errors or not results:
        row.update(winner="error", p_a=None, consistent=None,
                   error="; ".join(errors) or "no order was judged")
        return row
    verdicts = {v for v, _ in framed}
    row["p_a"] = sum(p for _, p in framed) / len(framed)
    row["winner"] = verdicts.pop() if len(verdicts) == 1 else "tie"
    row["consistent"] = (len({v for v, _ in framed}) == 1) if len(results) > 1 else None
    row["error"] = None
    return row
