"""Who may use the endpoint: the API key, and the refusal to listen beyond this machine
without one (fail closed)."""

from __future__ import annotations

import hmac
import ipaddress
import os

API_KEY_ENV = "MAGISTRATE_API_KEY"


def api_key() -> str | None:
    return os.environ.get(API_KEY_ENV) or None


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`: only this machine can connect."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname, 0.0.0.0, ::: reachable from elsewhere


def exposure_problem(host: str, open_endpoint: bool) -> str | None:
    """Why serving on `host` is refused, or None. Without an API key only loopback is
    served, unless the user said in so many words that the endpoint is open."""
    if api_key() or open_endpoint or is_loopback(host):
        return None
    return (f"refusing to serve on {host} without an API key: anyone who reaches it could judge "
            f"on your GPUs. Set ${API_KEY_ENV} on the cluster (clients send `Authorization: Bearer "
            f"<key>`), bind to 127.0.0.1, or pass --open (`open: true` in deploy/serve.yaml's args) "
            "to serve without a key on purpose")


def open_warning(host: str) -> str | None:
    """The warning for an endpoint served beyond loopback without a key (allowed only with
    --open: exposure_problem), or None when it is not one."""
    if api_key() or is_loopback(host):
        return None
    return (f"magistrate: WARNING: serving on {host} with no API key (--open): "
            "anyone who can reach this address can judge")


def key_given(headers: dict[str, str], key: str) -> bool:
    """The request carries the key (`Authorization: Bearer` or `X-API-Key`), compared in
    constant time."""
    given = headers.get("authorization", "").removeprefix("Bearer ").strip() or headers.get("x-api-key", "")
    return hmac.compare_digest(given.encode(), key.encode())
