"""summary.json's this_run.unit_seconds: an actor's busy time, its units overlapping."""

from magistrate.pipelines.judge_job import covered_seconds


def test_overlapping_units_count_once():
    assert covered_seconds([(0, 10), (2, 5), (4, 12)]) == 12
    assert covered_seconds([(5, 6), (0, 1), (0.5, 2)]) == 3


def test_gaps_between_units_are_not_busy_time():
    assert covered_seconds([(0, 1), (3, 4)]) == 2
    assert covered_seconds([]) == 0
