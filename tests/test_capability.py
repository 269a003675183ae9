"""One capability table per backend: config validation and the engine's choice read the same one.

A ξ variant that only the Python core has (added here at run time) must make the
default CPU run fall back to the torch step with the reason recorded, never crash,
and a config that insists on the C step must be refused up front for that reason.
"""
import json

import pytest
import torch

from ibhebb.config import load_config
from ibhebb.engine import cstep, unsupported
from ibhebb.engine.capability import NATIVE, TORCH, config_facts
from ibhebb.errors import ConfigError
from ibhebb.functional import biohsic, signals
from ibhebb.train import Trainer

needs_c = pytest.mark.skipif(cstep.unavailable(torch.float64) is not None, reason="no C compiler for the C step here")
BASE = ["model.kind=mlp", "model.hidden=[6]", "data.n_train=40", "data.n_test=20", "epochs=1", "eval.hsic_samples=0",
        "eval.train_samples=20", "dtype=float64", "rule.window=4"]


@pytest.fixture
def half_paper(monkeypatch):
    """A new ξ variant, ``half-paper`` (half the paper's ξ), in the Python core only."""
    real = biohsic.signal_from_kernels

    def with_half(kx, ky, z, *, gamma, sigma_z, variant):
        if variant == "half-paper":
            return 0.5 * real(kx, ky, z, gamma=gamma, sigma_z=sigma_z, variant="paper")
        return real(kx, ky, z, gamma=gamma, sigma_z=sigma_z, variant=variant)

    monkeypatch.setattr(signals, "VARIANTS", (*signals.VARIANTS, "half-paper"))
    monkeypatch.setattr(biohsic, "signal_from_kernels", with_half)


def test_tables_answer_for_config_and_spec_alike():
    cfg = load_config("configs/fig5-mnist.toml")
    assert TORCH.why_not(config_facts(cfg)) is None and NATIVE.why_not(config_facts(cfg)) is None
    assert NATIVE.why_not({**config_facts(cfg), "device": "cuda"}) == "the C step runs on the CPU only"
    assert NATIVE.why_not({**config_facts(cfg), "hidden": 9}) == f"more than {cstep.MAX_LAYERS - 1} hidden layers"
    assert NATIVE.why_not({**config_facts(cfg), "dtype": "float16"}) == "no C step for float16"
    assert unsupported(load_config(None, {"rule": {"name": "phsic"}, "model": {"kind": "mlp"}})) == "rule 'phsic' is not one of biohsic"


def test_the_abi_header_is_generated_from_the_python_names():
    header = cstep.abi_header()
    for prefix, names in cstep.enums().values():
        for i, name in enumerate(names):
            assert f"{prefix}_{name.upper().replace('-', '_')} = {i}" in header
    for name, _, _ in cstep._FIELDS:
        assert f"{name};" in header or f"{name}[" in header


def test_step_c_declares_what_it_implements():
    done = cstep.implements()
    assert set(done["variant"]) == set(signals.VARIANTS) and set(done["optimizer"]) == {"adamw", "adam", "sgd"}


def test_a_python_only_variant_is_refused_by_the_c_table(half_paper):
    facts = config_facts(load_config("configs/fig4-xor.toml", [*BASE, "rule.variant=half-paper"]))
    assert TORCH.why_not(facts) is None
    assert NATIVE.why_not(facts).startswith("the C step implements no variant 'half-paper'")
    with pytest.raises(ConfigError, match="engine = 'native' cannot run this config: the C step implements no variant 'half-paper'"):
        load_config("configs/fig4-xor.toml", [*BASE, "rule.variant=half-paper", "engine=native"])


@needs_c
def test_a_python_only_variant_makes_the_default_cpu_run_fall_back(half_paper, tmp_path):
    runs = {}
    for engine in ("auto", "rule"):
        cfg = load_config("configs/fig4-xor.toml", [*BASE, "rule.variant=half-paper", f"engine={engine}"])
        t = Trainer(cfg, tmp_path / engine, progress=False)
        t.run()
        runs[engine] = t
    line = json.loads((tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["engine"] == "torch"
    assert line["engine_fallback"].startswith("the C step implements no variant 'half-paper'")
    for a, b in zip(runs["auto"].model.parameters(), runs["rule"].model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    control = Trainer(load_config("configs/fig4-xor.toml", BASE), tmp_path / "paper", progress=False)
    control.run()
    line = json.loads((tmp_path / "paper" / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["engine"] == "native" and "engine_fallback" not in line


def test_old_engine_spellings_are_accepted_with_a_warning():
    with pytest.warns(FutureWarning, match="now spelled 'rule'"):
        assert load_config("configs/fig4-xor.toml", ["engine=eager"]).engine == "rule"
