"""`magistrate report`: its JSON figures against an independent recomputation, the terminal
table, "not available" sections, and one-line errors on bad input."""

from __future__ import annotations

import json
import re

import pytest

from tests.analysis.conftest import SUMMARY, synthetic_rows, write_output
from tests.analysis.expected import expected_figures
from tests.conftest import invoke_cli


def _report_json(output) -> dict:
    result = invoke_cli("report", str(output), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_json_figures_equal_independent_recomputation(report_output, report_rows):
    fig = _report_json(report_output)
    want = expected_figures(report_rows, seconds=SUMMARY["seconds"])
    assert fig["pairs"] == len(report_rows)
    assert fig["winners"] == want["winners"]
    assert fig["injection_suspects"]["count"] == want["injection_suspects"] > 0
    assert fig["injection_suspects"]["rate"] == pytest.approx(want["injection_suspects"] / len(report_rows))
    assert fig["errors"]["rate"] == pytest.approx(want["error_rate"])
    assert fig["errors"]["causes"] == dict(want["causes"])
    assert fig["position"]["consistency"] == pytest.approx(want["consistency"])
    assert fig["position"]["pairs_both_orders"] == want["pairs_both_orders"]
    assert fig["position"]["first_position_preference"] == pytest.approx(want["first_position"])
    assert fig["labels"]["agreement"] == pytest.approx(want["agreement"])
    assert fig["labels"]["labelled_pairs"] == want["labelled"]
    assert fig["labels"]["by_subset"].keys() == want["by_subset"].keys()
    for subset, agreement in want["by_subset"].items():
        assert fig["labels"]["by_subset"][subset]["agreement"] == pytest.approx(agreement)
    got_bins = [(b["count"], b["mean_p_a"], b["share_label_a"]) for b in fig["calibration"]["bins"]]
    assert [b[0] for b in got_bins] == [b[0] for b in want["calibration_bins"]]
    for got, exp in zip(got_bins, want["calibration_bins"]):
        assert got[1:] == pytest.approx(exp[1:]) if exp[0] else got[1:] == (None, None)
    assert fig["calibration"]["ece"] == pytest.approx(want["ece"])
    assert fig["calibration"]["brier"] == pytest.approx(want["brier"])
    assert fig["p_a_histogram"]["counts"] == want["histogram"]
    assert fig["p_a_histogram"]["mean"] == pytest.approx(want["mean_p_a"])
    assert fig["tokens"]["prompt"] == want["tokens"]["prompt"]
    assert fig["tokens"]["completion"] == want["tokens"]["completion"]
    assert fig["throughput"]["tokens_per_second"] == pytest.approx(want["tokens_per_second"])
    assert fig["throughput"]["pairs_per_second"] == SUMMARY["pairs_per_second"]
    assert fig["run"]["judge"] == ["mt-bench"] and fig["run"]["model"] == ["tiny-judge"]
    assert fig["rewardbench"] is None  # these subsets are not RewardBench's
    assert (report_output / "report.html").is_file()


def test_every_documented_key_is_in_the_json(report_output):
    """docs/analysis.md lists the keys of `report --json`; the two must not drift apart."""
    from tests.conftest import REPO

    doc = (REPO / "docs" / "analysis.md").read_text()
    fig = _report_json(report_output)

    def keys(value, prefix=""):
        if isinstance(value, dict) and prefix not in ("errors.causes", "labels.by_subset", "rewardbench.subsets"):
            for k, v in value.items():
                yield from keys(v, f"{prefix}.{k}" if prefix else k)
        elif prefix:
            yield prefix

    for key in keys(fig):
        if not key.startswith("calibration.bins"):
            assert f"`{key}`" in doc, f"report --json key {key} is not documented in docs/analysis.md"


def test_terminal_table_and_not_available_sections(tmp_path):
    rows = synthetic_rows(60, labels=False, subsets=False)
    out = write_output(tmp_path / "out", rows, files=1)  # no summary.json either
    result = invoke_cli("report", str(out), "--html", str(tmp_path / "r" / "report.html"))
    assert result.returncode == 0, result.stderr
    table = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in result.stdout.splitlines()
                 if line.startswith("  "))
    assert table["agreement with labels"] == "not available (no A/B labels)"
    assert table["throughput"] == "not available"
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Not available: the verdicts have no A/B labels." in page
    assert "Not available: no pair has both p_a and an A/B label." in page
    fig = _report_json(out)
    assert fig["labels"] is None and fig["calibration"] is None and fig["throughput"] is None


@pytest.mark.parametrize("args, message", [
    (("report", "{missing}"), "no verdicts here"),
    (("report", "{empty}"), "no verdicts here"),
    (("leaderboard", "{out}"), "the leaderboard needs column(s) model_a, model_b"),
    (("select", "{out}", "--min-confidence", "1.5", "--output", "{tmp}/dpo.parquet"),
     "--min-confidence must be between 0 and 1"),
    (("select", "{nop_a}", "--min-confidence", "0.5", "--output", "{tmp}/dpo.parquet"),
     "DPO selection needs column(s) prompt"),
    (("report", "http://example.com/out"), "only local paths and s3:// URIs"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "empty" / "verdicts").mkdir(parents=True)
    out = write_output(tmp_path / "out", synthetic_rows(20), files=1)
    nop_a = write_output(tmp_path / "nop", [{"id": "x", "winner": "A", "p_a": 0.9}], files=1)
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "out": out,
             "nop_a": nop_a, "tmp": tmp_path}
    result = invoke_cli(*(a.format(**paths) for a in args))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_summary_json_counts_flagged_rows_and_causes_as_the_report_does(report_output, report_rows):
    """summary.json's figures (pipelines/summary.py, read from the files with Arrow) and
    the report's agree with the rows, counted here in plain Python."""
    from magistrate.pipelines import locate
    from magistrate.pipelines.summary import summarise

    summary = summarise(locate(str(report_output)), elapsed=1.0)
    want = expected_figures(report_rows)
    assert summary["injection_suspects"] == want["injection_suspects"] > 0
    assert summary["error_causes"] == dict(want["causes"])
    assert summary["winners"] == want["winners"]
