"""The Fig 3 driver (``ibhebb reservoir fig3``) at tiny sizes: reservoirs and the feature memory on one stream."""
import json

import pytest

from ibhebb.app.fig3 import run_fig3
from ibhebb.cli import main
from ibhebb.reservoir.config import Fig3Config, load

TINY = ["sizes=[12]", 'readout.learners=["rls"]', "task.samples=12", "task.epochs=2", "task.window=4", "task.z_dim=3",
        "reservoir.steps=2", "features=[4096]", "seeds=1", "threads=1"]


@pytest.fixture(scope="module")
def fig3(tmp_path_factory):
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("fig3")
    return out, run_fig3(load(Fig3Config, "fig3-reservoir", TINY), out, progress=False)


def test_fig3_writes_scores_and_both_figures(fig3):
    out, res = fig3
    (run,) = res["runs"]
    assert run["units"] == 12 and len(run["test_all_steps"]["correlation"]) == 1
    assert (out / run["plot"]).stat().st_size > 0 and (out / run["fit_plot"]).stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["runs"][0]["units"] == 12


def test_fig3_feature_memory_tracks_new_samples(fig3):
    (fm,) = fig3[1]["feature_memory"]
    assert fm["features"] == 4096 and fm["test"]["correlation"][0] > 0.8


def test_fig3_cli_refuses_a_bad_feature_count(capsys):
    code = main(["reservoir", "fig3", "fig3-reservoir", "features=[7]", "--out", "/nonexistent/never"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ibhebb: error:") and "features must be even" in err and len(err.splitlines()) == 1
