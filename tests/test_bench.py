"""``ibhebb bench``: the table and JSON it writes, and its argument errors (no timing is asserted)."""
import json
import subprocess
import sys

import pytest
import torch

from ibhebb.app import bench
from ibhebb.app.bench import markdown, run_bench, update_cost
from ibhebb.engine.runner import NATIVE_CHUNK


def test_bench_rows_table_and_json(tmp_path):
    result = run_bench("cpu", steps=12, replicas=(2,), progress=False, groups=("backprop",))
    (row,) = result["rows"]
    assert row["rule"].startswith("backprop") and row["replicas"] == 2
    assert row["samples_per_s_total"] == pytest.approx(2 * row["samples_per_s_per_seed"])
    assert row["us_per_step"] > 0 and row["limit_ratio"] > 0
    table = markdown(result)
    assert "| backprop (batch 6) | - | rule | 2 |" in table and result["gemm_gflops"] > 0


def test_bench_native_rows():
    result = run_bench("cpu", steps=24, replicas=(1, 3), progress=False, groups=("buffer", "lif"), engines=("native",), lif_steps=2)
    rows = result["rows"]
    assert [(r["rule"], r["engine"], r["replicas"]) for r in rows] == [
        ("biohsic", "native", 1), ("biohsic (LIF, T=2)", "native", 1), ("biohsic", "native", 3), ("biohsic (LIF, T=2)", "native", 3)]
    for r in rows:
        assert r["chunk"] == NATIVE_CHUNK // r["steps_per_sample"] and r["limit_ratio"] > 0 and r["cache_limit_ratio"] > 0
    assert result["cache_bandwidth_gb_s"] > 0
    assert "| biohsic | buffer | native | 3 |" in markdown(result)


def test_bench_spiking_rows():
    result = run_bench("cpu", steps=24, replicas=(2,), progress=False, groups=("spiking",), engines=("native",), lif_steps=3)
    assert [(r["rule"], r["engine"], r["replicas"], r["steps_per_sample"]) for r in result["rows"]] == [
        ("biohsic (spiking, surrogate, current, T=3)", "native", 2, 3), ("biohsic (spiking, escape, bernoulli, T=3)", "native", 2, 3),
        ("biohsic (spiking, surrogate, bernoulli of sparse pixel intensities, T=3)", "native", 2, 3)]
    assert all(r["us_per_step"] > 0 and r["chunk"] == NATIVE_CHUNK // 3 for r in result["rows"])  # NATIVE_CHUNK updates
    assert "| biohsic (spiking, escape, bernoulli, T=3) | buffer | native | 2 |" in markdown(result)


def test_update_cost_counts_replicas_and_recompute():
    f1, b1 = update_cost("biohsic", "buffer", 1)
    f30, b30 = update_cost("biohsic", "buffer", 30)
    assert (f30, b30) == (30 * f1, 30 * b1)
    assert update_cost("biohsic", "recompute", 1)[0] > f1
    assert b1 == 6 * 4 * (784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10)


@pytest.mark.parametrize("args", [["--rows", "nope"], ["--replicas", "1,x"], ["--chunk", "-1"], ["--device", "tpu"],
                                  ["--engines", "fast"], ["--engines", "native", "--device", "cuda"]])
def test_bench_cli_refuses_bad_arguments(args):
    out = subprocess.run([sys.executable, "-m", "ibhebb", "bench", *args], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0


def test_bench_cli_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    out = subprocess.run([sys.executable, "-m", "ibhebb", "bench", "--rows", "backprop", "--replicas", "1", "--steps", "12",
                          "--json", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(path.read_text())
    assert set(data) >= {"device", "rows"} and data["rows"][0]["replicas"] == 1
    assert {"rule", "memory", "replicas", "samples_per_s_per_seed", "samples_per_s_total", "us_per_step", "limit_ratio"} <= set(data["rows"][0])


def test_bench_subnormal_row():
    result = run_bench("cpu", steps=24, replicas=(1, 2), progress=False, groups=("subnormal",), engines=("native",))
    assert [(r["rule"], r["memory"], r["replicas"]) for r in result["rows"]] == [("biohsic (subnormal moments)", "buffer", 1),
                                                                                ("biohsic (subnormal moments)", "buffer", 2)]
    assert all(r["limit_ratio"] > 0 and r["chunk"] == bench.PLANTED_RUN for r in result["rows"])
    assert "| biohsic (subnormal moments) | buffer | native | 2 |" in markdown(result)


def test_planted_moments_are_subnormal_and_stay_so_between_plantings():
    model, rule, opt = bench._online("mlp", "buffer", 2, torch.device("cpu"), 1)
    w1 = model.layers()[0].weight
    w1.grad = torch.ones_like(w1)
    opt.step()
    assert bench.plant_subnormal(opt, w1, slice(0, 10)) == 2 * bench.HIDDEN[0] * 10
    tiny = torch.finfo(torch.float32).tiny
    for key, beta in (("exp_avg", 0.9), ("exp_avg_sq", 0.99)):
        planted = opt.state[w1][key][..., :10]
        assert torch.all((planted > 0) & (planted < tiny)) and torch.all(opt.state[w1][key][..., 10:] > tiny)
        decayed = planted[0, 0, :1].clone()
        for _ in range(bench.PLANTED_RUN):  # one AdamW decay without gradient per sample
            decayed = decayed * beta
        assert 0 < decayed.item() < tiny


def test_bench_features_rows_run_the_rule_loop_and_the_c_step():
    result = run_bench("cpu", steps=40, replicas=(1,), progress=False, groups=("features",), engines=("rule", "native"))
    rule, native = result["rows"]
    assert (rule["memory"], rule["engine"], rule["chunk"]) == ("features", "rule", 0) and rule["limit_ratio"] > 0
    assert (native["memory"], native["engine"]) == ("features", "native") and native["chunk"] > 0
    assert update_cost("biohsic", "features", 1)[0] > update_cost("biohsic", "buffer", 1)[0]


def test_every_training_path_has_a_row_with_its_limit(monkeypatch, one_thread):
    """The CNN, reservoir, pHSIC and baseline rows, each at a tiny size (no timing asserted)."""
    monkeypatch.setattr(bench, "CNN_CHANNELS", [4, 8])
    monkeypatch.setattr(bench, "RESERVOIR_UNITS", 40)
    small = {"model.hidden=[1024,1024,1024]": "model.hidden=[64,64]", "optim.batch_size=256": "optim.batch_size=8"}
    monkeypatch.setitem(bench.PATH_BASES, "phsic", [small.get(s, s) for s in bench.PATH_BASES["phsic"]])
    groups = ("cnn", "reservoir", "phsic", "feedback", "layerwise")
    result = run_bench("cpu", steps=2, replicas=(1,), progress=False, groups=groups, engines=("rule", "native"))
    rows = result["rows"]
    got = [(r["rule"], r["memory"], r["engine"], r["replicas"]) for r in rows]
    paths = [name for group in ("phsic", "feedback", "layerwise") for name, _ in bench.PATHS[group]]
    cnn = [("biohsic (CNN)", m, e, r) for r, m in ((1, "buffer"), (1, "recompute"), (3, "buffer")) for e in ("rule", "torch")]
    assert got == [("biohsic", "reservoir", "rule", 1), ("biohsic", "reservoir", "native", 1),
                   *((name, "-", "rule", 1) for name in paths), *cnn]
    for r in rows:
        assert r["limit_us_per_step"] > 0 and 0 < r["limit_ratio"] and r["samples_per_s_per_seed"] > 0, r
    assert "| biohsic (CNN) | buffer | torch | 3 |" in markdown(result)


def test_cnn_update_flops_are_the_papers():
    """≈ 0.24 GFLOP per sample for the paper's CNN (forward and weight gradient of both convolutions), R times that for R seeds."""
    from ibhebb.models.cnn import CNN

    one = bench.cnn_update_flops(CNN((1, 28, 28), [128, 256], 10, replicas=1), "buffer", 4)
    conv = 28 * 28 * 128 * 9 + 14 * 14 * 256 * 128 * 9
    assert one == 4 * conv + 4 * 4 * 7 * 7 * 256 * 10
    assert 0.23e9 < one < 0.24e9
    assert bench.cnn_update_flops(CNN((1, 28, 28), [128, 256], 10, replicas=3), "recompute", 4) == 3 * (one + 6 * conv)


def test_counted_flops_see_matmuls_and_convolutions():
    a, w = torch.randn(5, 7), torch.randn(2, 3, 3, 3)
    assert bench.counted_flops(lambda: a @ a.T) == 2 * 5 * 7 * 5
    x = torch.randn(1, 3, 6, 6)
    assert bench.counted_flops(lambda: torch.nn.functional.conv2d(x, w, padding=1)) == 2 * 36 * 2 * 27
