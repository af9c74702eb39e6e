"""Shared fixtures for the judge tests.

`embedded_tokenizer` is the real Hugging Face tokenizer of the embedded judge
(SmolLM2-135M-Instruct). Only the tokenizer is loaded (no model, no engine); loading
transformers costs a few seconds once per session.
"""

from __future__ import annotations

import pytest

# The embedded judge is prepared under this cache (see magistrate.models.cache_dir).
EMBEDDED_CACHE = "/tmp/xdgtest"


@pytest.fixture(scope="session")
def embedded_tokenizer():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", EMBEDDED_CACHE)
        mp.delenv("MAGISTRATE_CACHE", raising=False)
        from magistrate.models import prepare_embedded

        path = prepare_embedded()  # returns at once when already prepared
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
