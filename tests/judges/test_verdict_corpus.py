"""The verdict readers against a labelled corpus of judge outputs (verdict_corpus.json):
every form the issue found and more, each with the verdict a careful reader takes (or none),
and what the upstream readers return beside it, for reference (their code stays out of the
project): Con-J's `evaluate_utils.meta_evaluate`, RewardBench's `con_j_evaluate` and
`process_judgement`, FastChat's `run_judge_pair` (upstream commits in texts/SOURCES.md).

Where magistrate reads more strictly than a lenient human would (`[[ A ]]`, a bare "A", a
cut-off "[[A"), the case says so in `lenient_reading`: those are error rows, never picks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from magistrate.judges import get_judge

CORPUS = json.loads((Path(__file__).parent / "verdict_corpus.json").read_text(encoding="utf-8"))
BRACKET_JUDGES = ("mt-bench", "mt-bench-tie", "skywork-critic")


def _cases():
    for case in CORPUS:
        names = (["con-j"] if case["family"] == "con-j"
                 else BRACKET_JUDGES if case["judge"] == "all" else [case["judge"]])
        for name in names:
            yield pytest.param(name, case, id=f"{case['id']}-{name}")


@pytest.mark.parametrize("judge, case", list(_cases()))
def test_each_output_reads_as_a_careful_reader_reads_it(judge, case):
    reading = get_judge(judge).read(case["text"])
    assert reading.verdict == case["verdict"], (case["why"], reading.error)
    if case["verdict"] is None:
        assert reading.error, "an output without a usable verdict is an error row with its reason"
    else:
        assert reading.error is None


def test_con_j_reads_everything_its_authors_and_rewardbench_read_right():
    right_upstream = [c for c in CORPUS if c["family"] == "con-j" and c["verdict"]
                      and c["verdict"] in c["upstream"].values()]
    assert len(right_upstream) >= 100  # the corpus is not trivially small
    missed = [c["id"] for c in right_upstream if get_judge("con-j").read(c["text"]).verdict != c["verdict"]]
    assert not missed


def test_the_corpus_has_every_form_the_issue_names():
    kinds = {c["kind"] for c in CORPUS}
    assert {"prefill-unquoted-key", "python-dict", "markdown", "json-float", "key-trailing-space", "prose",
            "example-then-verdict", "truncated", "conflict"} <= kinds
    assert {"ambiguous", "quoted-marker", "truncated-marker", "correction"} <= kinds


def test_where_upstream_readers_guess_magistrate_does_not():
    """Cases a careful reader leaves without a verdict that an upstream reader picks one
    for (FastChat's "[[A]] first", Con-J's digit after a key word in a cut-off reason)."""
    guessed = [c for c in CORPUS if c["verdict"] is None and any(v for v in c["upstream"].values())]
    assert len(guessed) >= 10
    for case in guessed:
        names = (["con-j"] if case["family"] == "con-j"
                 else BRACKET_JUDGES if case["judge"] == "all" else [case["judge"]])
        assert all(get_judge(n).read(case["text"]).verdict is None for n in names), case["id"]


def test_each_verdict_says_where_its_label_was_written():
    """Generate mode reads p_a at the token of the label the reader took
    (judges/generated.py): every reader names that label's place in the text. Con-J's
    side may be written 1, "1", １ or 一; a JSON-escaped key (\\u66f4...) gives no place."""
    from magistrate.judges.con_j import _SIDES

    unplaced = []
    for judge, case in (p.values for p in _cases()):
        profile = get_judge(judge)
        reading = profile.read(case["text"])
        if reading.verdict is None:
            continue
        if reading.label_at is None:
            unplaced.append(case["id"])
        elif judge == "con-j":
            assert _SIDES[case["text"][reading.label_at]] == reading.verdict, case["id"]
        else:
            assert case["text"].startswith(profile.labels[reading.verdict], reading.label_at), case["id"]
    assert unplaced == ["cj-007", "cj-008"]  # the two unicode-escape cases
