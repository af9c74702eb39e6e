"""Combining the orders a pair was judged in, and choosing those orders."""

from __future__ import annotations

from collections import Counter

import pytest

from magistrate.judges import OrderResult, combine, orders_for


def test_both_orders_agree():
    # ab: the judge saw A first and prefers it with p 0.8.
    # ba: the judge saw B first and prefers the second shown (original A) with p 0.7,
    #     i.e. P(first shown = original B better) = 0.3.
    row = combine([OrderResult("ab", "A", 0.8), OrderResult("ba", "B", 0.3)])
    assert row["winner"] == "A"
    assert row["consistent"] is True
    assert row["error"] is None
    assert row["p_a"] == pytest.approx((0.8 + 0.7) / 2)
    assert row["ab_verdict"] == "A" and row["ab_p_a"] == pytest.approx(0.8)
    assert row["ba_verdict"] == "A" and row["ba_p_a"] == pytest.approx(0.7)


def test_both_orders_agree_on_b():
    row = combine([OrderResult("ab", "B", 0.1), OrderResult("ba", "A", 0.95)])
    assert row["winner"] == "B"
    assert row["consistent"] is True
    assert row["p_a"] == pytest.approx((0.1 + 0.05) / 2)


def test_orders_disagree_gives_tie():
    # Position bias: the judge prefers whatever it sees first.
    row = combine([OrderResult("ab", "A", 0.9), OrderResult("ba", "A", 0.9)])
    assert row["winner"] == "tie"
    assert row["consistent"] is False
    assert row["ab_verdict"] == "A"
    assert row["ba_verdict"] == "B"
    assert row["p_a"] == pytest.approx((0.9 + 0.1) / 2)
    assert row["error"] is None


def test_one_tie_and_one_winner_is_a_tie():
    row = combine([OrderResult("ab", "tie", 0.5), OrderResult("ba", "B", 0.0)])
    assert row["winner"] == "tie"
    assert row["consistent"] is False
    assert row["p_a"] == pytest.approx(0.75)


def test_order_ba_maps_back_to_original_frame():
    row = combine([OrderResult("ba", "A", 0.8)])
    assert row["winner"] == "B"
    assert row["p_a"] == pytest.approx(0.2)
    assert row["ba_verdict"] == "B"
    assert row["consistent"] is None
    # The other order's fields exist and are empty.
    assert row["ab_verdict"] is None and row["ab_p_a"] is None

    assert combine([OrderResult("ba", "B", 0.25)])["winner"] == "A"
    assert combine([OrderResult("ba", "tie", 0.5)])["winner"] == "tie"


def test_one_order_only():
    row = combine([OrderResult("ab", "B", 0.3, rationale="B is right", raw="B is right [[B]]",
                               prompt_tokens=120, completion_tokens=9)])
    assert row["winner"] == "B"
    assert row["p_a"] == pytest.approx(0.3)
    assert row["consistent"] is None
    assert row["ab_rationale"] == "B is right"
    assert row["ab_raw"] == "B is right [[B]]"
    assert row["ab_prompt_tokens"] == 120
    assert row["ab_completion_tokens"] == 9
    assert row["ba_raw"] is None


def test_an_order_error_makes_an_error_row():
    row = combine([OrderResult("ab", "A", 1.0),
                   OrderResult("ba", None, None, raw="no idea", error="no verdict marker")])
    assert row["winner"] == "error"
    assert row["p_a"] is None
    assert row["consistent"] is None
    assert "order ba" in row["error"]
    assert "no verdict marker" in row["error"]
    assert "order ab" not in row["error"]  # only the failed order is named
    assert row["ba_error"] == "no verdict marker"
    assert row["ab_verdict"] == "A"  # the good order's own fields are kept


def test_both_orders_error_names_both():
    row = combine([OrderResult("ab", None, None, error="empty judge output"),
                   OrderResult("ba", None, None, error="prompt too long")])
    assert row["winner"] == "error"
    assert "order ab" in row["error"] and "empty judge output" in row["error"]
    assert "order ba" in row["error"] and "prompt too long" in row["error"]


def test_no_results_is_an_error():
    row = combine([])
    assert row["winner"] == "error"
    assert row["p_a"] is None
    assert row["error"]


# --- orders_for ------------------------------------------------------------------------


def test_orders_for_fixed_modes():
    assert orders_for("both", "x") == ["ab", "ba"]
    assert orders_for("ab", "x") == ["ab"]


def test_orders_for_unknown_mode():
    with pytest.raises(ValueError, match="unknown order"):
        orders_for("ba-only", "x")


def test_orders_for_random_is_deterministic_per_seed_and_id():
    for pair_id in ("a", "pair-17", "42"):
        first = orders_for("random", pair_id, seed=7)
        assert len(first) == 1 and first[0] in ("ab", "ba")
        assert all(orders_for("random", pair_id, seed=7) == first for _ in range(5))


def test_orders_for_random_varies_across_ids_and_is_balanced():
    counts = Counter(orders_for("random", f"pair-{i}", seed=0)[0] for i in range(200))
    assert set(counts) == {"ab", "ba"}
    assert 70 <= counts["ab"] <= 130
    assert 70 <= counts["ba"] <= 130


def test_orders_for_random_depends_on_seed():
    ids = [f"pair-{i}" for i in range(50)]
    seed0 = [orders_for("random", i, seed=0) for i in ids]
    seed1 = [orders_for("random", i, seed=1) for i in ids]
    assert seed0 != seed1
