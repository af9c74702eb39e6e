"""Importing the public package and the judges must not pull in the heavy engine stack
(judges/ is pure Python; the CLI imports ray/vllm only inside the commands that need them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("vllm", "torch", "transformers", "ray")


@pytest.mark.parametrize("module", ["magistrate", "magistrate.judges", "magistrate.cli",
                                    "magistrate.schema"])
def test_import_is_light(module):
    code = (f"import sys, {module}; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imported {out.stdout.strip()}"


def test_judges_package_source_never_imports_ray_or_vllm():
    from pathlib import Path

    import magistrate.judges

    for path in Path(magistrate.judges.__file__).parent.glob("*.py"):
        text = path.read_text()
        for name in ("ray", "vllm"):
            assert f"import {name}" not in text and f"from {name}" not in text, path
