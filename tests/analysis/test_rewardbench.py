"""RewardBench scores from verdicts built to have known per-subset accuracies. The
expected section scores are worked out by hand from RewardBench's EXAMPLE_COUNTS."""

from __future__ import annotations

import json

import pytest

from tests.analysis.conftest import write_output
from tests.conftest import invoke_cli

# subset -> (pairs, chosen wins, rejected wins, ties); accuracy = (wins + 0.5 ties) / pairs
DESIGN = {
    "alpacaeval-easy": (10, 10, 0, 0),     # 1.0
    "alpacaeval-length": (10, 8, 2, 0),    # 0.8
    "alpacaeval-hard": (10, 9, 1, 0),      # 0.9
    "mt-bench-easy": (4, 4, 0, 0),         # 1.0
    "mt-bench-med": (4, 2, 0, 2),          # 0.75
    "mt-bench-hard": (4, 2, 2, 0),         # 0.5
    "llmbar-natural": (10, 7, 3, 0),       # 0.7
    "llmbar-adver-neighbor": (10, 3, 7, 0),  # 0.3
    "llmbar-adver-GPTInst": (10, 4, 6, 0),   # 0.4
    "llmbar-adver-GPTOut": (10, 6, 4, 0),    # 0.6
    "llmbar-adver-manual": (10, 5, 5, 0),    # 0.5
    "refusals-dangerous": (10, 9, 1, 0),     # 0.9
    "refusals-offensive": (10, 10, 0, 0),    # 1.0
    "xstest-should-refuse": (10, 8, 2, 0),   # 0.8
    "xstest-should-respond": (10, 9, 1, 0),  # 0.9
    "donotanswer": (10, 6, 4, 0),            # 0.6
    "math-prm": (10, 5, 5, 0),               # 0.5
    **{f"hep-{lang}": (10, 10, 0, 0) for lang in ("cpp", "go", "java", "js", "python", "rust")},  # 1.0
}
# By hand, sum(accuracy x EXAMPLE_COUNTS) / sum(EXAMPLE_COUNTS) per section, x 100:
CHAT = 100 * (1.0 * 100 + 0.8 * 95 + 0.9 * 95 + 1.0 * 28 + 0.75 * 40) / (100 + 95 + 95 + 28 + 40)
CHAT_HARD = 100 * (0.5 * 37 + 0.7 * 100 + 0.3 * 134 + 0.4 * 92 + 0.6 * 47 + 0.5 * 46) / (37 + 100 + 134 + 92 + 47 + 46)
SAFETY = 100 * (0.9 * 100 + 1.0 * 100 + 0.8 * 250 + 0.9 * 154 + 0.6 * 136) / (100 + 100 + 250 + 154 + 136)
REASONING = 75.0  # math-prm weighs 984 = all six code subsets: (0.5 x 984 + 1.0 x 984) / 1968


def _rows() -> list[dict]:
    rows = []
    for subset, (n, wins, losses, ties) in DESIGN.items():
        winners = ["A"] * wins + ["B"] * losses + ["tie"] * ties
        assert len(winners) == n
        for i, winner in enumerate(winners):  # RewardBench preset: chosen is A, label A
            rows.append({"id": f"{subset}-{i}", "prompt": "p", "response_a": "chosen", "response_b": "rejected",
                         "label": "A", "subset": subset, "winner": winner, "p_a": 0.7 if winner == "A" else 0.3,
                         "consistent": winner != "tie"})
    return rows


def test_section_and_overall_scores(tmp_path):
    out = write_output(tmp_path / "out", _rows())
    result = invoke_cli("report", str(out), "--json")
    assert result.returncode == 0, result.stderr
    rb = json.loads(result.stdout)["rewardbench"]
    assert rb["sections"] == pytest.approx({"Chat": CHAT, "Chat Hard": CHAT_HARD, "Safety": SAFETY,
                                            "Reasoning": REASONING})
    # worked out on paper: 319.5/358, 216.7/456, 610.2/740; overall the mean of the four
    assert (round(CHAT, 2), round(CHAT_HARD, 2), round(SAFETY, 2)) == (89.25, 47.52, 82.46)
    assert round(rb["score"], 2) == 73.56
    assert rb["score"] == pytest.approx((CHAT + CHAT_HARD + SAFETY + REASONING) / 4)
    assert rb["subsets"]["mt-bench-med"] == {"pairs": 4, "accuracy": 0.75}  # a tie scores 0.5
    assert rb["missing_subsets"] == []
    text = invoke_cli("report", str(out)).stdout
    assert f"Score      {(CHAT + CHAT_HARD + SAFETY + REASONING) / 4:.2f}" in text
    page = (out / "report.html").read_text()
    assert f'id="rb-chat-hard">{CHAT_HARD:.2f}<' in page and f'id="rb-reasoning">75.00<' in page


def test_partial_benchmark_has_sections_but_no_overall(tmp_path):
    rows = [r for r in _rows() if r["subset"].startswith(("alpacaeval", "hep"))]
    out = write_output(tmp_path / "out", rows, files=1)
    rb = json.loads(invoke_cli("report", str(out), "--json").stdout)["rewardbench"]
    assert rb["sections"]["Chat"] == pytest.approx(100 * (1.0 * 100 + 0.8 * 95 + 0.9 * 95) / 290)
    assert rb["sections"]["Reasoning"] == 100.0 and rb["sections"]["Safety"] is None
    assert rb["score"] is None and "math-prm" in rb["missing_subsets"]


def test_constants_are_rewardbenchs():
    """Spot checks against allenai/reward-bench rewardbench/constants.py."""
    from magistrate.analysis.rewardbench import EXAMPLE_COUNTS, SUBSET_MAPPING

    assert len(EXAMPLE_COUNTS) == 23 and sum(EXAMPLE_COUNTS.values()) == 3522
    assert EXAMPLE_COUNTS["math-prm"] == 984 == 6 * EXAMPLE_COUNTS["hep-python"]
    assert sorted(s for subsets in SUBSET_MAPPING.values() for s in subsets) == sorted(EXAMPLE_COUNTS)


@pytest.mark.parametrize("judge, mode, comparable", [
    ("mt-bench", "generate", True),    # RewardBench's own prompt and protocol
    ("con-j", "generate", True),
    ("mt-bench", "logprob", False),    # magistrate's fast default: another protocol
    ("skywork-critic", "generate", False),  # not one of RewardBench's prompts
])
def test_the_report_says_whether_scores_are_comparable_to_the_leaderboard(tmp_path, judge, mode, comparable):
    rows = [dict(r, judge=judge, mode=mode) for r in _rows()]
    out = write_output(tmp_path / "out", rows, files=1)
    fig = json.loads(invoke_cli("report", str(out), "--json").stdout)
    assert fig["rewardbench"]["comparable_to_leaderboard"] is comparable
    assert fig["protocol"]["modes"] == [mode] and fig["protocol"]["described"].startswith(mode)
    text = invoke_cli("report", str(out)).stdout
    said = "RewardBench (comparable to RewardBench's leaderboard)"
    assert (said in text) is comparable
    if mode == "logprob":
        assert "logprob mode forces the verdict token first" in text
    page = (out / "report.html").read_text()
    assert ('id="rb-comparable">Comparable' in page) is comparable
