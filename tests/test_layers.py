"""The import rule between layers (README: Layout). Read from the source, every import
counted, also those inside functions:

- judges/ is pure Python: no ray, no vllm, nothing of actors/, pipelines/, serve/, cli/;
- actors/ hosts engines and knows nothing of the batch pipeline (pipelines/), Serve or the CLI;
- serve/ and analysis/ use of pipelines/ only what `magistrate.pipelines` exports;
- the contracts at the top (schema.py, pairs.py, model_files.py) build on judges/ only;
- only cli/ imports cli/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import magistrate
import magistrate.pipelines

PACKAGE = Path(magistrate.__file__).parent
RULES = {  # folder -> import prefixes it must not use
    "judges": ("ray", "vllm", "magistrate.actors", "magistrate.pipelines", "magistrate.serve",
               "magistrate.analysis", "magistrate.cli"),
    "actors": ("magistrate.pipelines", "magistrate.serve", "magistrate.analysis", "magistrate.cli"),
    "pipelines": ("magistrate.serve", "magistrate.analysis", "magistrate.cli"),
    "serve": ("magistrate.analysis", "magistrate.cli"),
    "analysis": ("magistrate.serve", "magistrate.actors", "magistrate.cli"),
    ".": ("magistrate.actors", "magistrate.pipelines", "magistrate.serve", "magistrate.analysis",
          "magistrate.cli"),
}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [a.name for a in node.names], node.lineno))
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("folder", sorted(RULES))
def test_no_layer_imports_what_it_must_not(folder):
    broken = [f"{path.relative_to(PACKAGE)}:{line} imports {module}"
              for path in sorted((PACKAGE / folder).glob("*.py") if folder == "." else
                                 (PACKAGE / folder).rglob("*.py"))
              for module, _, line in _imports(path)
              if any(_within(module, banned) for banned in RULES[folder])]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("folder", ["serve", "analysis"])
def test_serve_and_analysis_use_only_the_public_surface_of_pipelines(folder):
    public = set(magistrate.pipelines.__all__)
    broken = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for module, names, line in _imports(path):
            if _within(module, "magistrate.pipelines") and (module != "magistrate.pipelines"
                                                             or not set(names) <= public):
                broken.append(f"{path.relative_to(PACKAGE)}:{line} imports {module} {names}")
    assert not broken, "\n".join(broken)


def test_the_rule_sees_lazy_imports(tmp_path):
    """An import inside a function counts: the rule reads every node, not the top only."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from magistrate.pipelines.units import Unit\n")
    assert [m for m, _, _ in _imports(probe)] == ["magistrate.pipelines.units"]


@pytest.mark.parametrize("package", ["magistrate.pipelines", "magistrate.judges"])
def test_every_exported_name_exists(package):
    """The public surface is what `__all__` says: a listed name that is not there breaks
    `from package import *` and misleads the rule above."""
    import importlib

    module = importlib.import_module(package)
    assert [name for name in module.__all__ if not hasattr(module, name)] == []
