"""`prune` end to end on digits (CPU): curve -> decision -> pruned net -> fine-tune -> table."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from dnn_modularity.data import DigitsDataModule
from dnn_modularity.io import read_csv_rows, write_csv_rows
from dnn_modularity.models.classifier import ImageClassifier, load_classifier
from dnn_modularity.prune import CONF_DIR, TABLE_COLUMNS, prune

QUIET = [
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
]


@pytest.fixture(scope="module")
def parent_ckpt(tmp_path_factory) -> Path:
    """A ResNet-20 trained for 2 epochs on digits (plain Lightning, ~3 s)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("parent")
    dm = DigitsDataModule(batch_size=64)
    module = ImageClassifier(
        {"name": "resnet20", "num_classes": 10, "in_channels": 1},
        dm.mean,
        dm.std,
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05, "momentum": 0.9},
    )
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out),
    )
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(str(out / "parent.ckpt"))
    return out / "parent.ckpt"


def _cfg(ckpt: Path, run_dir: Path, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(
            "prune",
            # digits: the parent's data (the no-argument default data is cluttered_digits)
            overrides=[
                "data=digits",
                f"ckpt_path={ckpt}",
                f"run_dir={run_dir}",
                *QUIET,
                *overrides,
            ],
        )


def _test_accuracy(module: ImageClassifier) -> float:
    """Accuracy (%) of `module` on the digits test split, computed here, not by Lightning."""
    dm = DigitsDataModule(batch_size=64)
    dm.setup()
    module.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in dm.test_dataloader():
            correct += int((module(images).argmax(1) == labels).sum())
            total += len(labels)
    return 100.0 * correct / total


def _hand_made_curve(path: Path, small_at: set[str]) -> list[str]:
    """A curve record for ResNet-20's block taps whose increment is < 0.03 exactly at `small_at`."""
    layers = ["stem"] + [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    value, rows = 0.1, []
    for i, name in enumerate(layers):
        if i:
            value += 0.01 if name in small_at else 0.05
        rows.append({"variant": "trained", "repeat": 0, "layer_index": i + 1, "layer": name,
                     "measure": "modularity", "value": value})  # fmt: skip
    write_csv_rows(path, rows)
    return layers


@pytest.mark.slow
def test_prune_finetune_table_on_digits(parent_ckpt, tmp_path, assert_inherited):
    run_dir = tmp_path / "run"
    small = {"layer1.2", "layer2.1", "layer3.2", "layer2.0"}  # layer2.0 changes shape: kept
    _hand_made_curve(tmp_path / "curve.csv", small)
    cfg = _cfg(
        parent_ckpt, run_dir, f"curve={tmp_path / 'curve.csv'}", "trainer.max_epochs=1",
        "callbacks=none", "logger=csv",
    )  # fmt: skip
    result = prune(cfg)

    # the decision: exactly the removable blocks whose increment is below tau
    decision = result["decision"]
    assert decision["removed"] == ["layer1.2", "layer2.1", "layer3.2"]
    assert "not removable" in decision["skipped"]["layer2.0"]

    # the table: CSV + Markdown, finite numbers, the pruned layout
    rows = read_csv_rows(run_dir / "pruning_table.csv")
    assert len(rows) == 1 and set(TABLE_COLUMNS) <= set(rows[0])
    row = rows[0]
    assert row["removed_layers"] == "layer1.2 layer2.1 layer3.2"
    assert row["pruned_arch"] == "resnet20 blocks=[2, 2, 2]"
    for col in ("acc_parent", "acc_pruned_before_ft", "acc_pruned_after_ft", "params_reduction",
                "macs_reduction", "flops_reduction"):  # fmt: skip
        assert math.isfinite(float(row[col])), col
    assert 0 < float(row["params_reduction"]) < 100 and int(row["finetune_epochs"]) == 1
    # paper 1's sign: ΔAcc = Acc_parent − Acc_pruned (a drop is positive)
    assert float(row["delta_acc"]) == pytest.approx(
        float(row["acc_parent"]) - float(row["acc_pruned_after_ft"])
    )
    md = (run_dir / "pruning_table.md").read_text()
    assert "layer1.2 layer2.1 layer3.2" in md and "FLOPs ↓ (%)" in md

    # before fine-tuning: every kept tensor equals the parent's (by the model's layer mapping)
    parent = load_classifier(parent_ckpt)
    init = load_classifier(run_dir / "pruned_init.ckpt")
    assert init.net.arch_config()["blocks"] == [2, 2, 2]
    mapping = parent.net.layer_mapping(decision["removed"])
    psd, isd = parent.net.state_dict(), init.net.state_dict()
    assert assert_inherited(psd, isd, mapping, decision["removed"]) == len(isd)

    # the reported accuracies are the measured ones (recomputed here from the checkpoints)
    assert float(row["acc_parent"]) == pytest.approx(_test_accuracy(parent), abs=1e-3)
    assert float(row["acc_pruned_before_ft"]) == pytest.approx(_test_accuracy(init), abs=1e-3)
    tuned = load_classifier(row["checkpoint"])
    assert float(row["acc_pruned_after_ft"]) == pytest.approx(_test_accuracy(tuned), abs=1e-3)
    assert not torch.equal(tuned.net.fc.weight, init.net.fc.weight)  # it was fine-tuned


@pytest.mark.slow
def test_measured_curve_criterion1_and_sweep(parent_ckpt, tmp_path):
    # criterion1 on a measured curve; no fine-tuning (the decision and costs are what is checked)
    cfg = _cfg(parent_ckpt, tmp_path / "c1", "pruning=criterion1", "probe.n=100", "finetune=false")
    result = prune(cfg)
    d = result["decision"]
    assert d["rule"] == "criterion1" and len(d["values"]) == 10 and d["curve_kind"] == "Q"
    assert (tmp_path / "c1" / "curve" / "curve.csv").exists()
    assert set(d["removed"]) <= set(d["candidates"])
    row = result["rows"][0]
    # without fine-tuning the "after FT" cells are empty, in the rows, the CSV and the Markdown
    assert row["acc_pruned_after_ft"] is None and row["delta_acc"] is None
    assert math.isfinite(row["acc_pruned_before_ft"]) and row["finetune_epochs"] == 0
    csv_row = read_csv_rows(tmp_path / "c1" / "pruning_table.csv")[0]
    assert csv_row["acc_pruned_after_ft"] == "" and csv_row["delta_acc"] == ""
    md = (tmp_path / "c1" / "pruning_table.md").read_text()
    assert "after FT" not in md and "before FT" in md

    # single-layer sweep of the two deepest candidates with 1 fine-tuning epoch each
    _hand_made_curve(tmp_path / "curve.csv", {"layer3.2"})
    cfg = _cfg(
        parent_ckpt, tmp_path / "sweep", "pruning=single_layer_sweep", "pruning.max_layers=2",
        f"curve={tmp_path / 'curve.csv'}", "trainer.max_epochs=1", "callbacks=none",
    )  # fmt: skip
    result = prune(cfg)
    sweep = read_csv_rows(tmp_path / "sweep" / "delta_m_vs_delta_acc.csv")
    assert [r["layer"] for r in sweep] == ["layer3.1", "layer3.2"]
    assert [float(r["delta_m"]) for r in sweep] == pytest.approx([0.05, 0.01])
    for r in sweep:
        assert float(r["delta_acc_drop"]) == pytest.approx(
            float(r["acc_parent"]) - float(r["acc_pruned_after_ft"])
        )
    assert (tmp_path / "sweep" / "figures" / "delta_m_vs_delta_acc.png").exists()
    assert len(read_csv_rows(tmp_path / "sweep" / "pruning_table.csv")) == 2


def test_pruned_network_keeps_the_parents_normalisation(tmp_path):
    """The inherited weights expect the parent's input statistics, not the datamodule's."""
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=64)
    mean, std = (0.2,), (0.5,)  # not the digits module's (about 0.31 / 0.38)
    assert dm.mean != pytest.approx(mean)
    module = ImageClassifier({"name": "resnet20", "num_classes": 10, "in_channels": 1}, mean, std)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=5, limit_val_batches=0, accelerator="cpu",
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    ckpt = tmp_path / "parent.ckpt"
    trainer.save_checkpoint(str(ckpt))

    run_dir = tmp_path / "run"
    cfg = _cfg(
        ckpt, run_dir, "pruning=explicit", "pruning.remove=[]", "finetune=false",
        "callbacks=none", "logger=none",
    )  # fmt: skip
    row = prune(cfg)["rows"][0]
    # removing nothing changes nothing: the "pruned" net is the parent, same inputs, same accuracy
    assert row["num_removed"] == 0
    assert row["acc_pruned_before_ft"] == pytest.approx(row["acc_parent"], abs=1e-6)
    init = load_classifier(run_dir / "pruned_init.ckpt")
    assert init.hparams.mean == pytest.approx(mean) and init.hparams.std == pytest.approx(std)


def test_bad_layer_names_are_refused_before_training(parent_ckpt, tmp_path):
    cfg = _cfg(parent_ckpt, tmp_path / "a", "pruning=explicit", "pruning.remove=[layer9.1]")
    with pytest.raises(ValueError, match=r"layer 'layer9\.1' is unknown.*valid choices.*layer3\.2"):
        prune(cfg)
    cfg = _cfg(
        parent_ckpt, tmp_path / "b", "pruning=explicit",
        "pruning.remove=[layer3.0,layer3.1,layer3.2]",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"layer 'layer3\.0' is not removable.*valid choices"):
        prune(cfg)
    cfg = _cfg(
        parent_ckpt, tmp_path / "c", "pruning=explicit",
        "pruning.remove=[layer1.0,layer1.1,layer1.2]",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"every block of stage 'layer1'"):
        prune(cfg)
    assert not (tmp_path / "c" / "checkpoints").exists()  # refused before any training


@pytest.mark.slow
def test_cli_entry_point(parent_ckpt, tmp_path):
    """`python -m dnn_modularity.prune` composes conf/prune.yaml from any working directory."""
    run_dir = tmp_path / "cli"
    cmd = [
        sys.executable, "-m", "dnn_modularity.prune", f"ckpt_path={parent_ckpt}",
        f"run_dir={run_dir}", "pruning=explicit", "pruning.remove=[layer3.2]", "finetune=false",
        "logger=none", "callbacks=none", f"hydra.run.dir={tmp_path / 'hydra'}", *QUIET,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv_rows(run_dir / "pruning_table.csv")
    assert rows[0]["removed_layers"] == "layer3.2" and rows[0]["rule"] == "explicit"


@pytest.mark.slow
def test_table1_through_the_rule_on_the_authors_curve(tmp_path):
    """`prune pruning=delta curve=authors:cifar10` keeps [2, 3, 6]: -42.9 % params, -60.2 % MACs."""
    from dnn_modularity.data import FakeDataModule

    torch.manual_seed(0)
    dm = FakeDataModule(test_size=64)
    arch = {"name": "resnet56", "num_classes": 10, "in_channels": 3}
    module = ImageClassifier(arch, dm.mean, dm.std)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=0, accelerator="cpu",
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    ckpt = tmp_path / "resnet56.ckpt"
    trainer.save_checkpoint(str(ckpt))

    cfg = _cfg(
        ckpt, tmp_path / "run", "data=fake", "data.test_size=64", "pruning=delta",
        "curve=authors:cifar10", "finetune=false", "callbacks=none", "logger=none",
    )  # fmt: skip
    result = prune(cfg)
    assert result["curve"]["source"] == "authors:cifar10"
    row = result["rows"][0]
    assert row["pruned_arch"] == "resnet56 blocks=[2, 3, 6]"
    assert round(row["params_reduction"], 1) == 42.9 and round(row["macs_reduction"], 1) == 60.2
    assert "layer1.0" in result["decision"]["removed"]

    with pytest.raises(ValueError, match="measure=modularity"):
        prune(_cfg(ckpt, tmp_path / "m", "data=fake", "curve=authors:cifar10", "measure=M"))


@pytest.mark.slow
def test_cumulative_sweep_removes_layers_back_to_front(parent_ckpt, tmp_path):
    """Paper 1, Fig. 10(b): variant j removes the first j listed layers (VGG11_1..3 style)."""
    _hand_made_curve(tmp_path / "curve.csv", {"layer3.2"})
    cfg = _cfg(
        parent_ckpt, tmp_path / "sweep", "pruning=single_layer_sweep", "pruning.mode=cumulative",
        "pruning.layers=[layer3.2,layer3.1,layer2.2]", f"curve={tmp_path / 'curve.csv'}",
        "finetune=false", "callbacks=none", "logger=none",
    )  # fmt: skip
    result = prune(cfg)
    rows = result["rows"]
    assert [r["removed_layers"] for r in rows] == [
        "layer3.2", "layer3.1 layer3.2", "layer2.2 layer3.1 layer3.2",
    ]  # fmt: skip
    assert [r["pruned_arch"] for r in rows] == [
        "resnet20 blocks=[3, 3, 2]", "resnet20 blocks=[3, 3, 1]", "resnet20 blocks=[3, 2, 1]",
    ]  # fmt: skip
    sweep = result["sweep"]["rows"]
    assert [r["layer"] for r in sweep] == ["layer3.2", "layer3.1", "layer2.2"]
    assert [r["delta_m"] for r in sweep] == pytest.approx([0.01, 0.05, 0.05])
    accs = [r["acc_pruned_before_ft"] for r in rows]
    assert [r["delta_acc_step"] for r in sweep] == pytest.approx(
        [rows[0]["acc_parent"] - accs[0], accs[0] - accs[1], accs[1] - accs[2]]
    )
    assert (tmp_path / "sweep" / "variants" / "layer2.2" / "pruned_init.ckpt").exists()
    with pytest.raises(ValueError, match=r"unknown pruning.mode 'both'.*cumulative"):
        prune(_cfg(parent_ckpt, tmp_path / "x", "pruning=single_layer_sweep",
                   "pruning.mode=both", f"curve={tmp_path / 'curve.csv'}"))  # fmt: skip


def test_measured_curve_at_the_official_taps_files_values_under_the_units(parent_ckpt, tmp_path):
    """probe.taps=official (the official code's stem conv before BN) still drives the rules."""
    cfg = _cfg(
        parent_ckpt, tmp_path / "off", "pruning=delta", "probe.n=60", "probe.taps=official",
        "probe.strategy=sequential", "finetune=false", "callbacks=none", "logger=none",
    )  # fmt: skip
    d = prune(cfg)["decision"]
    assert d["layers"][:2] == ["stem", "layer1.0"] and len(d["layers"]) == 10
    rows = read_csv_rows(tmp_path / "off" / "curve" / "curve.csv")
    assert {r["tap"] for r in rows} == {"official"} and rows[0]["layer"] == "stem"
    block = prune(_cfg(parent_ckpt, tmp_path / "blk", "pruning=delta", "probe.n=60",
                       "probe.strategy=sequential", "finetune=false", "callbacks=none",
                       "logger=none"))["decision"]  # fmt: skip
    # the stem is read before BN (a different value); the blocks are the same outputs
    assert d["values"][0] != pytest.approx(block["values"][0])
    assert d["values"][1:] == pytest.approx(block["values"][1:])
    with pytest.raises(ValueError, match=r"probe.taps='relu' cannot drive a pruning rule"):
        prune(_cfg(parent_ckpt, tmp_path / "bad", "pruning=delta", "probe.n=60",
                   "probe.taps=relu", "finetune=false"))  # fmt: skip
