"""Bradley-Terry on synthetic battles drawn from known Elo ratings: the fit recovers them
within its bootstrap intervals, through `magistrate leaderboard` on a real output layout."""

from __future__ import annotations

import json
import random

from tests.analysis.conftest import write_output
from tests.conftest import invoke_cli

TRUE = {"model-0": 850.0, "model-1": 950.0, "model-2": 1000.0, "model-3": 1050.0, "model-4": 1150.0}  # mean 1000


def _battles(n: int, seed: int, tie_share: float = 0.0) -> list[dict]:
    rng = random.Random(seed)
    names = sorted(TRUE)
    rows = []
    for i in range(n):
        a, b = rng.sample(names, 2)
        p_a = 1.0 / (1.0 + 10 ** ((TRUE[b] - TRUE[a]) / 400))
        u = rng.random()
        # a tie takes equal shares from both outcomes, so expected score stays p_a
        winner = "tie" if u < tie_share else ("A" if rng.random() < p_a else "B")
        rows.append({"id": f"b{i}", "prompt": "p", "response_a": "x", "response_b": "y",
                     "model_a": a, "model_b": b, "winner": winner, "p_a": p_a})
    rows.append({"id": "err", "model_a": names[0], "model_b": names[1], "winner": "error", "error": "boom"})
    rows.append({"id": "self", "model_a": names[0], "model_b": names[0], "winner": "A", "p_a": 0.9})
    return rows


def test_recovers_known_strengths_within_intervals(tmp_path):
    out = write_output(tmp_path / "out", _battles(4000, seed=3))
    table = tmp_path / "board.csv"
    result = invoke_cli("leaderboard", str(out), "--json", "--output", str(table))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["model"] for r in rows] == sorted(TRUE, key=TRUE.get, reverse=True)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:
        assert r["lower"] <= TRUE[r["model"]] <= r["upper"], r
        assert r["lower"] <= r["rating"] <= r["upper"]
        assert 10 < r["upper"] - r["lower"] < 120  # 95% intervals of ~1600 battles per model
    assert abs(sum(r["rating"] for r in rows) / 5 - 1000) < 1e-6
    assert sum(r["battles"] for r in rows) == 2 * 4000  # the error and the self-play left out
    assert table.read_text().splitlines()[0].startswith("model,rating,lower,upper,battles")


def test_ties_and_the_printed_table(tmp_path):
    out = write_output(tmp_path / "out", _battles(3000, seed=5, tie_share=0.2), files=2)
    result = invoke_cli("leaderboard", str(out), "--bootstrap", "50")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["rank", "model", "rating"]
    assert [line.split()[1] for line in lines[1:]] == sorted(TRUE, key=TRUE.get, reverse=True)
    top = lines[1].split()
    assert abs(float(top[2]) - TRUE["model-4"]) < 50


def test_wins_only_is_finite(tmp_path):
    rows = [{"id": f"r{i}", "model_a": "strong", "model_b": "weak", "winner": "A", "p_a": 0.9} for i in range(20)]
    result = invoke_cli("leaderboard", str(write_output(tmp_path / "out", rows, files=1)), "--json")
    assert result.returncode == 0, result.stderr
    board = json.loads(result.stdout)
    assert [r["model"] for r in board] == ["strong", "weak"]
    assert all(abs(r["rating"]) < 1e5 for r in board)
