"""The sweep facility: grids, one run directory per cell, resuming after an interruption, Ray, Fig 6."""
import json

import pytest

from ibhebb.app import sweep
from ibhebb.app.sweep import cell_name, parse_grid, run_sweep, split_values
from ibhebb.cli import main
from ibhebb.errors import ConfigError, UserError

CONFIG = """
seeds = 2
epochs = 1
[data]
name = "xor"
n_train = 48
n_test = 20
[model]
hidden = [6, 4]
[rule]
name = "biohsic"
gamma = 10.0
sigmas = [0.3, 0.25, 2.0]
[optim]
lr = 1e-3
[eval]
hsic_samples = 8
"""
GRID = ["rule.window=2,4", "rule.variant=paper,exact"]


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(CONFIG)
    return path


def summaries(out):
    return {d.name: json.loads((d / "summary.json").read_text())["test_accuracy"] for d in out.iterdir() if d.is_dir()}


def count_cells(monkeypatch):
    """Record which cells actually train (not the ones skipped as done)."""
    trained = []
    original = sweep.run_cell

    def counting(cfg, run_dir, progress=False):
        if sweep.cell_state(sweep.load_config(None, cfg), sweep.Path(run_dir)) != "done":
            trained.append(sweep.Path(run_dir).name)
        return original(cfg, run_dir, progress)

    monkeypatch.setattr(sweep, "run_cell", counting)
    return trained


def test_grid_parsing_and_cell_names():
    assert split_values("1,[2,3],'a,b'") == ["1", "[2,3]", "'a,b'"]
    axes, fixed = parse_grid(["rule.window=2,4,8", "seeds=3", "model.hidden=[8,4],[16]"])
    assert axes == [("rule.window", [2, 4, 8]), ("model.hidden", [[8, 4], [16]])] and fixed == {"seeds": 3}
    assert cell_name({"rule.window": 4, "model.hidden": [8, 4]}) == "rule.window-4_model.hidden-8x4"
    with pytest.raises(ConfigError):
        parse_grid(["rule.window"])
    with pytest.raises(ConfigError):
        parse_grid(["rule.window=2,"])


def test_bad_cell_refused_before_anything_runs(config, tmp_path):
    with pytest.raises(ConfigError, match="rule.window"):
        run_sweep(config, ["rule.window=4,1"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "rule.window-4").exists()


def test_interrupted_sweep_resumes_without_redoing_finished_cells(config, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    run_sweep(config, GRID, reference, progress=False)
    assert len(summaries(reference)) == 4

    out = tmp_path / "out"
    calls = []
    original = sweep.run_cell

    def interrupted(cfg, run_dir, progress=False):
        calls.append(run_dir)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(cfg, run_dir, progress)

    monkeypatch.setattr(sweep, "run_cell", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, GRID, out, progress=False)
    assert len(summaries(out)) == 2
    finished = {d.name: (d / "summary.json").read_text() for d in out.iterdir() if (d / "summary.json").exists()}

    monkeypatch.setattr(sweep, "run_cell", original)
    trained = count_cells(monkeypatch)
    run_sweep(config, GRID, out, progress=False)
    assert sorted(trained) == sorted(set(summaries(reference)) - set(finished))
    for name, text in finished.items():  # untouched
        assert (out / name / "summary.json").read_text() == text
    assert summaries(out) == summaries(reference)

    trained.clear()
    run_sweep(config, GRID, out, progress=False)  # everything done: nothing runs
    assert trained == []


def test_interrupted_cell_resumes_from_its_checkpoint(config, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    run_sweep(config, ["rule.window=2,4", "epochs=2"], reference, progress=False)
    out = tmp_path / "out"
    run_sweep(config, ["rule.window=2,4", "epochs=1"], out, progress=False)
    cell = out / "rule.window-4"
    (cell / "summary.json").unlink()  # as if stopped during epoch 2: checkpoint and metrics of epoch 1 only
    first_epoch = (cell / "metrics.jsonl").read_text()
    run_sweep(config, ["rule.window=2,4", "epochs=2"], out, progress=False)  # both cells continue to epoch 2
    lines = (cell / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] + "\n" == first_epoch
    assert summaries(out) == summaries(reference)


def test_sweep_dir_holding_another_config_is_refused(config, tmp_path):
    run_sweep(config, ["rule.window=2,4"], tmp_path / "out", progress=False)
    with pytest.raises(UserError, match=r"another config \(differs in seeds\)"):
        run_sweep(config, ["rule.window=2,4", "seeds=1"], tmp_path / "out", progress=False)


def test_sweep_dir_written_before_a_config_key_existed_is_the_same_run(config, tmp_path, monkeypatch):
    """A cell's config.json from an older ibhebb lacks keys added since: they take their defaults, and the finished
    cells are still recognised as done (not refused as another config, not retrained)."""
    out = tmp_path / "out"
    run_sweep(config, ["rule.window=2,4"], out, progress=False)
    for cell in out.glob("rule.window-*"):
        saved = json.loads((cell / "config.json").read_text())
        del saved["model"]["layernorm_eps"], saved["on_divergence"]
        (cell / "config.json").write_text(json.dumps(saved))
    trained = count_cells(monkeypatch)
    run_sweep(config, ["rule.window=2,4"], out, progress=False)
    assert trained == []


def test_cli_sweep_and_fig6_plot(config, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", str(config), *GRID, "--out", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "rule.window-4_rule.variant-exact" in table and "test" in table
    assert main(["plot", str(out)]) == 0
    assert (out / "fig6.png").stat().st_size > 10_000


def test_ray_missing_is_one_line(config, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    assert main(["sweep", str(config), "rule.window=2,4", "--out", str(tmp_path / "o"), "--ray", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'ibhebb[ray]'" in err


def test_sweep_on_a_local_ray_instance(config, tmp_path):
    ray = pytest.importorskip("ray")
    for attempt in range(3):  # Ray gives its raylet a fixed 30 s to register, which a loaded 2-core machine can miss
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            break
        except Exception as e:  # noqa: BLE001
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(e):
                raise
    try:
        out = tmp_path / "out"
        run_sweep(config, ["rule.window=2,4"], out, use_ray=True, cpus_per_cell=1, progress=False)
        assert set(summaries(out)) == {"rule.window-2", "rule.window-4"}
        reference = tmp_path / "reference"
        run_sweep(config, ["rule.window=2,4"], reference, progress=False)
        assert summaries(out) == summaries(reference)  # a Ray task trains exactly what a local run does
    finally:
        ray.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_ray_address_where_nothing_listens_is_refused_at_once():
    """No Ray needed: the address is checked with a plain TCP connect before Ray is asked (Ray retries for minutes)."""
    port = _free_port()
    with pytest.raises(UserError, match=f"cannot connect to the Ray cluster at '127.0.0.1:{port}': nothing answers"):
        sweep._check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(UserError, match="is not HOST:PORT"):
        sweep._check_reachable("no-port-here")
    sweep._check_reachable("auto")  # Ray finds the cluster itself


def test_ray_without_ray_installed_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UserError, match=r"--ray needs Ray, which is not installed: pip install 'ibhebb\[ray\]'"):
        sweep._import_ray()
