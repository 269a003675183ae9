"""Write configs/table2/*.toml: seed 001 Table 2 (VGG-like net, 1x / 2x, SGD + divnorm / AdamW + batchnorm).

Run from the repository root: ``python3 scripts/make_table2_configs.py``. Learning rates and group counts of
backprop and pHSIC are those of the authors' VGG grid scripts (``run_vgg_{sgd,adam}_experiments_grid.sh``);
those of feedback alignment, sign symmetry and the layer-wise classifier are not in them and are ours (marked).
"""
from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "ibhebb" / "configs" / "table2"
DATA = {"cifar10": "cifar10", "fashion-mnist": "fashion-mnist"}
COLUMNS = ("backprop", "feedback-alignment", "sign-symmetry", "layer-classifier", "layer-classifier-fa",
           "phsic-cossim", "phsic-gaussian")
ROWS = ("sgd-div", "adamw-bn")
# (lr of the hidden layers, lr of the readout, where it comes from); lr of a single-optimiser rule in both
LRS = {
    "sgd-div": {
        "backprop": (0.006, 0.006, "authors"), "feedback-alignment": (0.006, 0.006, "ours"),
        "sign-symmetry": (0.006, 0.006, "ours"), "layer-classifier": (0.006, 0.006, "ours"),
        "layer-classifier-fa": (0.006, 0.006, "ours"),
        "phsic-cossim": (0.5, 5e-4, "authors"), "phsic-gaussian": (0.4, 1e-4, "authors"),
    },
    "adamw-bn": {
        "backprop": (0.005, 0.005, "authors"), "feedback-alignment": (5e-4, 5e-4, "ours"),
        "sign-symmetry": (5e-4, 5e-4, "ours"), "layer-classifier": (5e-4, 5e-4, "ours"),
        "layer-classifier-fa": (5e-4, 5e-4, "ours"),
        "phsic-cossim": (5e-4, 5e-4, "authors"), "phsic-gaussian": (0.005, 5e-4, "authors"),
    },
}


def rule_table(column: str) -> list[str]:
    if column.startswith("phsic-"):
        kernel = column.split("-", 1)[1]
        return ['name = "phsic"', f'kernel = "{kernel}"', "grouped = true", 'form = "batch"', 'estimator = "phsic"',
                "gamma = 2.0", "sigmas = [0.5, 0.1, 5.0]"]
    lines = [f'name = "{column}"']
    if column == "sign-symmetry":
        lines.append('feedback_scale = "mean-abs"')
    return lines


def config(data: str, column: str, width: int, row: str) -> str:
    sgd = row == "sgd-div"
    lr, readout_lr, source = LRS[row][column]
    local = column.startswith("phsic-") or column.startswith("layer-classifier")
    milestones = "[100, 200, 250, 275]" if column == "backprop" and sgd else "[300, 350, 450, 475]"
    grp = ", grouping without divisive normalisation (p = 0.5)" if column.startswith("phsic") else ""
    norm = ("SGD, momentum 0.95, divisive normalisation over 64 channel groups (p = 0.2), SELU" if sgd
            else "AdamW, batchnorm, LeakyReLU 0.1" + grp)
    lines = [
        f"# Seed 001 Table 2 (docs/spec.md §9): VGG-like conv net {width}x, {column}, {norm}; {data}.",
        "# 500 epochs, batch 128, dropout 0.05, gamma = 2, lr x0.25 at the milestones, weight decay 1e-7 (local) / 1e-6",
        f"# (readout; all layers under end-to-end rules); learning rates: {source} (see scripts/make_table2_configs.py).",
        "# Full size is far too big for a CPU; scale it with e.g. model.scale=0.125 model.groups=8 (configs/table2/README.md).",
        "seeds = 5", "epochs = 500", "",
        "[data]", f'name = "{DATA[data]}"', "validation = 0.1", *(["augment = true"] if data == "cifar10" else []), "",
        "[model]", 'kind = "vgg"', f"width = {width}", "scale = 1.0", "bias = false", "dropout = 0.05",
        f'activation = "{"selu" if sgd else "leaky-relu"}"', "negative_slope = 0.1",
        f"batchnorm = {'false' if sgd else 'true'}", f"divisive_norm = {'true' if sgd else 'false'}",
        "groups = 64", "group_delta = 1.0", f"group_p = {0.2 if sgd else 0.5}", "",
        "[rule]", *rule_table(column), "",
        "[optim]", f'name = "{"sgd" if sgd else "adamw"}"', *(["momentum = 0.95"] if sgd else ["betas = [0.9, 0.999]"]),
        "batch_size = 128", f"milestones = {milestones}", "gamma_lr = 0.25", f"lr = {lr}",
        f"weight_decay = {1e-7 if local else 1e-6}",
        *([f"readout_lr = {readout_lr}", "readout_weight_decay = 1e-6"] if local else []), "",
        "[eval]", "hsic_samples = 0", "batch_size = 500", "",
    ]
    return "\n".join(lines)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for data in DATA:
        for column in COLUMNS:
            for width in (1, 2):
                for row in ROWS:
                    (OUT / f"{data}-{column}-{width}x-{row}.toml").write_text(config(data, column, width, row))


if __name__ == "__main__":
    main()
