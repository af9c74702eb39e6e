"""Shared fixtures for the judge tests.

`embedded_tokenizer` is the real Hugging Face tokenizer of the embedded judge
(SmolLM2-135M-Instruct), from the cache `make setup` prepared (tests/conftest.py's
`embedded_model`). Only the tokenizer is loaded: no model, no engine.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedded_tokenizer(embedded_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model)
