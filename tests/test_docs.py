"""The README's Python example, every Python block of the site's pages and the docstring examples run."""
import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCTEST_MODULES = [
    "ibhebb",
    "ibhebb.functional.kernels",
    "ibhebb.functional.signals",
    "ibhebb.functional.layers",
    "ibhebb.functional.biohsic",
    "ibhebb.functional.optim",
    "ibhebb.functional.reservoir",
    "ibhebb.functional.spiking",
    "ibhebb.models.spiking",
    "ibhebb.engine.capability",
    "ibhebb.models.layers",
    "ibhebb.models.networks",
    "ibhebb.memory.window",
    "ibhebb.memory.features",
    "ibhebb.memory.stats",
    "ibhebb.functional.traces",
    "ibhebb.rules.learners",
    "ibhebb.models.conv",
    "ibhebb.models.cnn",
    "ibhebb.data.augment",
    "ibhebb.app.sweep",
    "ibhebb.engine",
    "ibhebb.engine.cstep",
    "ibhebb.presets",
    "ibhebb.train.loggers",
    "ibhebb.app.compare",
]


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
DOC_PAGES = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
PAGES_WITH_CODE = [p for p in DOC_PAGES if PYTHON_BLOCK.search((ROOT / "docs" / p).read_text())]


def test_site_pages_have_examples():
    """The runner below sees the site's pages (a changed fence or folder would silently run nothing)."""
    assert {"engine.md", "index.md", "concepts/three-factor.md", "howto/train.md"} <= set(PAGES_WITH_CODE)


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_docs_python_examples_run(page, monkeypatch, tmp_path):
    """Every ```python block of every page of the site runs, the blocks of a page in order in one namespace."""
    import torch

    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        namespace: dict = {"__name__": "__docs__"}
        for block in PYTHON_BLOCK.findall((ROOT / "docs" / page).read_text()):
            exec(compile(block, page, "exec"), namespace)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_specification_ships_in_the_repository_and_is_linked():
    spec = ROOT / "docs" / "spec.md"
    assert spec.is_file() and "## 3. The three-factor rule" in spec.read_text()
    assert "docs/spec.md" in (ROOT / "README.md").read_text()
    assert "(spec.md)" in (ROOT / "docs" / "rule.md").read_text()
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "src").rglob("*.py")]
    assert not [p for p in texts if "shared/MATH.md" in p.read_text(encoding="utf-8")]
