"""The documentation site: it builds in strict mode, its API page covers ``ibhebb.__all__``, every tutorial runs, ruff passes."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ibhebb

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.py"))
API_PAGE = DOCS / "reference" / "api.md"

def _env() -> dict:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONWARNINGS="ignore::DeprecationWarning")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the site once, strict: any warning (broken link or anchor, missing API object, page outside the nav) fails."""
    out = tmp_path_factory.mktemp("site")
    env = _env()
    env.pop("IBHEBB_DOCS_EXECUTE", None)  # the tutorials are executed by test_tutorial_runs, not by the build
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-d", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_site_builds_strict(site):
    for page in ("index.html", "concepts/three-factor/index.html", "reference/api/index.html",
                 "tutorials/xor_three_factor/index.html", "results/index.html"):
        assert (site / page).is_file(), page
    # equations reach the page as arithmatex spans for MathJax
    assert 'class="arithmatex"' in (site / "concepts/three-factor/index.html").read_text()


def test_api_reference_lists_every_public_name():
    listed = set(re.findall(r"^::: ibhebb\.(\S+)\s*$", API_PAGE.read_text(), re.M))
    missing = sorted(set(ibhebb.__all__) - listed)
    assert not missing, f"add to docs/reference/api.md: {missing}"


def test_api_reference_renders_every_public_name(site):
    html = (site / "reference/api/index.html").read_text()
    missing = [name for name in ibhebb.__all__ if f'id="ibhebb.{name}"' not in html]
    assert not missing, f"not rendered by mkdocstrings: {missing}"


def _requires(path: Path) -> list[str]:
    return re.findall(r"ibhebb-tutorial-requires:\s*(\w+)", path.read_text())


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    """Each tutorial (a jupytext percent script) runs as a notebook, top to bottom, without an error."""
    import jupytext
    import nbclient

    missing = [name for name in _requires(path) if not hasattr(ibhebb, name)]
    if missing:
        pytest.skip(f"{path.name} needs ibhebb.{', ibhebb.'.join(missing)}, which this version does not have")
    for name in re.findall(r"ibhebb-tutorial-data:\s*([\w-]+)", path.read_text()):
        ibhebb.fetch_dataset(name, progress=False)  # a fresh machine has no data yet (MD5-checked, once)
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    old = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"
    try:
        client.execute()
    finally:
        if old is None:
            os.environ.pop("MPLBACKEND")
        else:
            os.environ["MPLBACKEND"] = old


def test_tutorials_are_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for path in TUTORIALS:
        assert f"tutorials/{path.name}" in nav, path.name


def test_ruff_passes():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "src", "tests", "docs/tutorials", "docs_hooks"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
