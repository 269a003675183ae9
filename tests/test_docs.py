"""The README's Python example and the docstring examples run."""
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
    "ibhebb.models.conv",
    "ibhebb.models.cnn",
    "ibhebb.data.augment",
    "ibhebb.app.sweep",
    "ibhebb.engine",
    "ibhebb.engine.cstep",
]


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


@pytest.mark.parametrize("page", ["engine.md"])
def test_docs_python_examples_run(page):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / page).read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, page, "exec"), {})


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
