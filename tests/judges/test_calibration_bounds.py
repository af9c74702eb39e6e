"""A calibration file cannot silently change decisions (issue 30, finding 7): the
threshold is finite and in [0.5, 1] (or null: none passed), every map parameter is
finite, a Platt slope is above 0 (at or below 0 it flips p_a) and a temperature above 0.
A file that breaks one is refused in one line naming the field. No engine."""

from __future__ import annotations

import copy
import json
import math

import pytest

from magistrate.judges.calibration import apply, parse_calibration
from magistrate.pipelines.sources import InputError, read_calibration

FIGURES = {"pairs": 100, "accuracy": 0.8, "log_loss": 0.45, "brier": 0.15, "ece": 0.03}
SOUND = {
    "format": "magistrate-calibration", "version": 1, "method": "platt", "parameters": {"a": 0.8, "b": 0.1},
    "n_labelled": 100, "excluded": {}, "folds": 5,
    "cv_log_loss": {"temperature": 0.46, "platt": 0.45, "uncalibrated": 0.6},
    "before": FIGURES, "after": FIGURES,
    "decision": {"target": 0.9, "risk": 0.1, "threshold": 0.8, "min_pairs": 100, "tested": 40, "pairs": 100,
                 "decided": 60, "coverage": 0.6, "agreement": 0.95, "lower_bound": 0.91, "message": "m"},
    "source": {"output": "out/", "judge": ["mt-bench"]},
}
TEMPERATURE = dict(SOUND, method="temperature", parameters={"temperature": 2.0})


def _with(base: dict, path: str, value) -> str:
    data = copy.deepcopy(base)
    *keys, last = path.split(".")
    target = data
    for key in keys:
        target = target[key]
    target[last] = value
    return json.dumps(data)  # NaN and Infinity as JSON readers write them


@pytest.mark.parametrize("threshold", [0.5, 0.73, 1.0, None])
def test_a_sound_file_is_read(threshold):
    calibration = parse_calibration(_with(SOUND, "decision.threshold", threshold))
    assert calibration.decision.threshold == threshold
    _, confidence, decided = apply(calibration, [0.9], [0.9], [0.9], ["A"])
    assert bool(decided[0]) == bool(threshold is not None and confidence[0] >= threshold)
    assert parse_calibration(json.dumps(TEMPERATURE)).parameters == {"temperature": 2.0}


REFUSED = [
    (SOUND, "decision.threshold", math.nan, "decision.threshold"),  # nothing would be decided
    (SOUND, "decision.threshold", -math.inf, "decision.threshold"),  # everything would be
    (SOUND, "decision.threshold", math.inf, "decision.threshold"),
    (SOUND, "decision.threshold", 0.49, "decision.threshold"),  # decides winners the map doubts
    (SOUND, "decision.threshold", 1.01, "decision.threshold"),
    (SOUND, "parameters.a", -0.7, "slope"),  # flips p_a
    (SOUND, "parameters.a", 0.0, "slope"),  # every p_a the same
    (SOUND, "parameters.a", math.nan, "parameters.a"),
    (SOUND, "parameters.b", math.inf, "parameters.b"),
    (TEMPERATURE, "parameters.temperature", 0.0, "parameters"),
    (TEMPERATURE, "parameters.temperature", -2.0, "parameters"),
    (TEMPERATURE, "parameters.temperature", math.inf, "parameters.temperature"),
]


@pytest.mark.parametrize("base, path, value, field", REFUSED,
                         ids=[f"{p}={v}" for _, p, v, _ in REFUSED])
def test_a_file_that_would_change_decisions_is_refused_naming_the_field(tmp_path, base, path, value, field):
    text = _with(base, path, value)
    with pytest.raises(ValueError) as excinfo:
        parse_calibration(text, "cal.json")
    message = str(excinfo.value)
    assert message.startswith("cal.json is not a magistrate calibration") and field in message, message
    assert "\n" not in message and "errors.pydantic.dev" not in message
    if path == "parameters.a" and value <= 0:
        assert "parameters" in message
    if path == "parameters.temperature" and value <= 0:
        assert "temperature" in message
    # the reader every --calibration goes through refuses it the same way
    (tmp_path / "cal.json").write_text(text)
    with pytest.raises(InputError, match="not a magistrate calibration"):
        read_calibration(str(tmp_path / "cal.json"))
