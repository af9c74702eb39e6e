"""Who may use the endpoint: fail closed beyond loopback without an API key (no engine,
no port bound: these refusals come before anything starts)."""

from __future__ import annotations

import pytest

from magistrate.serve.access import exposure_problem, is_loopback, key_given
from tests.conftest import invoke_cli

KEY = "mgk-test-key"


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.3.2.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("192.168.0.7", False), ("example.org", False),
])
def test_loopback_is_only_this_machine(host, loopback):
    assert is_loopback(host) is loopback


def test_exposure_needs_a_key_or_open(monkeypatch):
    monkeypatch.delenv("MAGISTRATE_API_KEY", raising=False)
    assert exposure_problem("127.0.0.1", False) is None
    assert "without an API key" in exposure_problem("0.0.0.0", False)
    assert exposure_problem("0.0.0.0", True) is None
    monkeypatch.setenv("MAGISTRATE_API_KEY", KEY)
    assert exposure_problem("0.0.0.0", False) is None


def test_key_is_read_from_either_header():
    assert key_given({"authorization": f"Bearer {KEY}"}, KEY)
    assert key_given({"x-api-key": KEY}, KEY)
    assert not key_given({"authorization": "Bearer nope"}, KEY)
    assert not key_given({}, KEY)


def test_non_loopback_without_a_key_is_refused_before_anything_starts():
    env = {"MAGISTRATE_API_KEY": ""}
    refused = invoke_cli("serve", "--host", "0.0.0.0", env=env)
    assert refused.returncode == 2
    assert "refusing to serve on 0.0.0.0 without an API key" in refused.stderr and "--open" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_open_flag_allows_and_warns():
    """--open passes the check with a warning; the unknown judge then stops it before any
    port is bound, so nothing listens beyond loopback during the test."""
    allowed = invoke_cli("serve", "--host", "0.0.0.0", "--open", "--judge", "no-such-judge",
                         env={"MAGISTRATE_API_KEY": ""})
    assert "WARNING: serving on 0.0.0.0 with no API key (--open)" in allowed.stderr
    assert allowed.returncode == 2 and "no-such-judge" in allowed.stderr
    with_key = invoke_cli("serve", "--host", "0.0.0.0", "--judge", "no-such-judge",
                          env={"MAGISTRATE_API_KEY": KEY})
    assert "refusing" not in with_key.stderr and "no-such-judge" in with_key.stderr


def test_serve_command_refuses_an_unknown_judge_in_one_line():
    """Before Ray or an engine starts (it was in test_serve.py, marked engine)."""
    result = invoke_cli("serve", "--judge", "no-such-judge")
    assert result.returncode == 2
    assert result.stderr.startswith("magistrate: error:") and "no-such-judge" in result.stderr
    assert "Traceback" not in result.stderr
