"""Which compilation a job's engines get (`judge --compilation`)."""

from magistrate.actors.engine import COMPILE_FROM_PAIRS, eager_for


def test_asked_for_is_what_is_given_whatever_the_size():
    assert eager_for("eager", 10**9) is True
    assert eager_for("compiled", 1) is False


def test_auto_compiles_only_a_job_long_enough_to_pay_it_back():
    # None: the machine's default (eager on the CPU build, compiled on a GPU).
    assert eager_for("auto", COMPILE_FROM_PAIRS - 1) is None
    assert eager_for("auto", COMPILE_FROM_PAIRS) is False
