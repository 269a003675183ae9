"""Packaging: one version, packaged presets found by name, and a wheel that installs beside an existing torch."""
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import ibhebb
from ibhebb.cli import main
from ibhebb.config import load_config, tomllib
from ibhebb.presets import description, preset_path, presets, resolve_config

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_source():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ibhebb._version.__version__"}
    cff = re.search(r'^version:\s*"([^"]+)"', (ROOT / "CITATION.cff").read_text(), re.M).group(1)
    assert cff == ibhebb.__version__
    assert f"## {ibhebb.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_torch_has_no_upper_bound_in_the_package():
    deps = re.search(r"^dependencies = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S).group(1)
    (torch_req,) = [d for d in re.findall(r'"([^"]+)"', deps) if d.startswith("torch")]
    assert "<" not in torch_req and torch_req.startswith("torch>=")


def test_presets_are_the_package_configs_and_the_clone_sees_the_same_files():
    found = presets()
    assert {"fig4-xor", "fig5-mnist", "fig5-cifar10", "table1/mnist-backprop-div"} <= set(found)
    assert all(description(p) for p in found.values()), [n for n, p in found.items() if not description(p)]
    for name, path in found.items():  # the top-level configs/ of a clone is the packaged folder
        assert (ROOT / "configs" / f"{name}.toml").resolve() == path.resolve()


def test_a_preset_resolves_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for given in ("fig4-xor", "fig4-xor.toml", "configs/fig4-xor.toml"):
        assert resolve_config(given) == preset_path("fig4-xor")
    assert load_config("fig4-xor").model.kind == "lif-mlp"
    own = tmp_path / "fig4-xor.toml"  # a file of the user's own wins over the preset of the same name
    own.write_text('[model]\nkind = "mlp"\n[data]\nname = "xor"\n')
    assert load_config("fig4-xor.toml").model.kind == "mlp"


def test_cli_configs_lists_every_preset_with_its_description(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(presets())
    line = next(ln for ln in lines if ln.split()[0] == "fig5-mnist")
    assert description(preset_path("fig5-mnist")) in line
    assert main(["configs", "fig4-xor"]) == 0
    assert capsys.readouterr().out == preset_path("fig4-xor").read_text()


def test_cli_unknown_preset_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "fig9-nothing", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a preset name" in err
    assert main(["configs", "fig9-nothing"]) == 2
    assert "no preset named" in capsys.readouterr().err


def _pip_list(python: Path) -> dict[str, str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    return {p["name"].lower(): p["version"] for p in json.loads(out.stdout)}


def _link_site_packages(source: Path, target: Path) -> None:
    """Make ``target`` (a fresh venv's site-packages) hold what ``source`` holds, but ibhebb and pip: an
    environment that already has torch and the rest. Symlinks, so nothing is copied and nothing in ``source``
    is written to as long as pip installs nothing but ibhebb (checked with a dry run first)."""
    skip = re.compile(r"^(ibhebb|__editable__|_?pip\b|pip-|__pycache__|_distutils_hack|distutils-precedence)|\.pth$", re.I)
    for entry in source.iterdir():
        if not skip.search(entry.name) and not (target / entry.name).exists():
            (target / entry.name).symlink_to(entry)


def test_wheel_installs_beside_an_existing_torch_and_trains_a_preset_from_an_empty_directory(tmp_path):
    src = tmp_path / "src-copy"  # build from a copy: no build/ or egg-info in the working tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w", str(wheels)],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob("ibhebb-*.whl")
    assert wheel.name.startswith(f"ibhebb-{ibhebb.__version__}-")

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "ibhebb/py.typed" in names and "ibhebb/engine/native/step.c" in names
    packaged = {n[len("ibhebb/configs/"):-len(".toml")] for n in names if n.startswith("ibhebb/configs/") and n.endswith(".toml")}
    assert packaged == set(presets())
    (torch_req,) = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist: torch")]
    assert torch_req.replace(" ", "") == "Requires-Dist:torch>=2.1"
    assert "License-Expression: MIT" in meta

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    _link_site_packages(Path(sysconfig.get_paths()["purelib"]), site)
    before = _pip_list(python)
    assert before.get("torch", "").startswith(__import__("torch").__version__.split("+")[0])
    assert "ibhebb" not in before

    report = tmp_path / "report.json"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--dry-run", "--report", str(report), str(wheel)],
                   check=True, capture_output=True)
    planned = [(i["metadata"]["name"].lower(), i["metadata"]["version"]) for i in json.loads(report.read_text())["install"]]
    assert planned == [("ibhebb", ibhebb.__version__)], f"pip would change the environment: {planned}"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True)
    after = _pip_list(python)
    assert after.pop("ibhebb") == ibhebb.__version__ and after == before

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(python), "-c", "import ibhebb; print(ibhebb.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(venv)
    out = subprocess.run(
        [str(venv / "bin" / "ibhebb"), "train", "fig4-xor", "epochs=1", "seeds=1", "data.n_train=100", "data.n_test=50",
         "model.steps=3", "--out", "run", "--no-progress"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("test accuracy:") and (empty / "run" / "summary.json").is_file()
