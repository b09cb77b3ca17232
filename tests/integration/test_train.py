"""`train(cfg)` end to end on digits and fake data (in-process, CPU, 1-3 short epochs)."""

from __future__ import annotations

import csv
import json
import math
import struct
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dnn_modularity.models.classifier import ImageClassifier, load_classifier
from dnn_modularity.train import CONF_DIR, check_config, resolve_wandb_mode, train

FAST = [
    "data=digits",  # the quick digits runs (the no-argument default is cluttered_digits)
    "model=resnet20",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "probe.n=100",
]


def make_cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"run_dir={tmp_path}"])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_digits_run_writes_every_record(tmp_path: Path) -> None:
    result = train(make_cfg(tmp_path, *FAST))
    assert result["run_dir"] == str(tmp_path)
    assert 0.0 <= result["test"]["test/acc"] <= 1.0 and "test/acc_top5" in result["test"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["test"] == pytest.approx(result["test"])

    config = OmegaConf.load(tmp_path / "config.yaml")
    assert config.model.name == "resnet20" and config.run_dir == str(tmp_path)
    assert config.callbacks.modularity.n == 100  # resolved, no interpolations left

    rows = read_csv(tmp_path / "modularity.csv")
    assert Counter(r["epoch"] for r in rows) == {"0": 10, "1": 10, "2": 10}
    assert all(math.isfinite(float(r["modularity"])) for r in rows)
    metrics = read_csv(tmp_path / "metrics.csv")
    columns = set(metrics[0])
    assert {
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "test/acc",
        "test/acc_top5",
    } <= columns
    assert {"modularity/layer_01", "modularity/layer_10"} <= columns
    # The monitor's x-axis is epochs completed, under its own key (Lightning's `epoch` column is
    # the 0-based index of the running epoch).
    measured = [r for r in metrics if r["modularity/layer_01"]]
    assert sorted(float(r["modularity/epoch"]) for r in measured) == [0.0, 1.0, 2.0]
    assert not any(r["epoch"] for r in measured)
    for name in ("modularity_curves", "modularity_heatmap"):
        assert (tmp_path / "figures" / f"{name}.png").is_file()
        assert (tmp_path / "figures" / f"{name}.pdf").is_file()

    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file() and (tmp_path / "checkpoints" / "best.ckpt").is_file()
    module = load_classifier(last)
    assert not module.training and module.net.arch_config()["name"] == "resnet20"
    logits = module(torch.rand(2, 1, 8, 8))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    plain = ImageClassifier.load_from_checkpoint(last)  # no other arguments needed
    assert plain.hparams.mean == module.hparams.mean and plain.hparams.optimizer["lr"] == 0.02


def test_top5_accuracy_only_with_more_than_five_classes() -> None:
    def classifier(num_classes: int) -> ImageClassifier:
        net = {"name": "resnet20", "num_classes": num_classes, "in_channels": 1}
        return ImageClassifier(net, mean=[0.5], std=[0.5])

    assert classifier(6).has_top5
    assert not classifier(5).has_top5  # always 100 % with 5 classes


def test_last_checkpoint_holds_the_final_epoch_even_without_a_new_best(tmp_path: Path) -> None:
    # lr = 0: val/acc rarely improves, so the best-checkpoint callback saves rarely; last.ckpt
    # must still be the weights after the final epoch (resume, analyze and prune read it).
    result = train(
        make_cfg(tmp_path, *FAST, "trainer.max_epochs=3", "optimizer.lr=0.0", "test=false")
    )
    path = tmp_path / "checkpoints" / "last.ckpt"
    assert result["paths"]["last_checkpoint"] == str(path)
    last = torch.load(path, map_location="cpu", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == 3 * 3


def test_fake_data_run_with_class_separation_m(tmp_path: Path) -> None:
    result = train(
        make_cfg(
            tmp_path,
            *FAST,
            "data=fake",
            "trainer.max_epochs=1",
            "probe.n=40",
            "graph.compute_M=true",
            "graph.num_edges=300",
            "graph.metric=pearson",
            "test_ckpt=best",
        )
    )
    rows = read_csv(tmp_path / "modularity.csv")
    assert {r["epoch"] for r in rows} == {"0", "1"}
    assert all(r["metric"] == "pearson" and math.isfinite(float(r["M"])) for r in rows)
    metrics = read_csv(tmp_path / "metrics.csv")
    assert any(r.get("M/layer_01") for r in metrics)
    assert (tmp_path / "figures" / "M_heatmap.png").is_file()
    assert "test/acc" in result["test"]


def test_resume_keeps_history_without_duplicates(tmp_path: Path) -> None:
    first = tmp_path / "first"
    train(make_cfg(first, *FAST))
    before = read_csv(first / "modularity.csv")
    ckpt = first / "checkpoints" / "last.ckpt"

    # Resume into a new folder: the history travels in the checkpoint.
    second = tmp_path / "second"
    train(make_cfg(second, *FAST, "trainer.max_epochs=3", f"ckpt_path={ckpt}"))
    after = read_csv(second / "modularity.csv")
    assert Counter(r["epoch"] for r in after) == {"0": 10, "1": 10, "2": 10, "3": 10}
    assert after[:30] == before

    # Resume in the same folder after rows the checkpoint does not know about (a crashed run
    # that got further): those rows are dropped, none is duplicated.
    with (first / "modularity.csv").open("a") as handle:
        handle.write("9,1,stem,block,100,3,cosine,0.5,,0,0\n")
    train(make_cfg(first, *FAST, "trainer.max_epochs=3", f"ckpt_path={ckpt}"))
    again = read_csv(first / "modularity.csv")
    assert Counter(r["epoch"] for r in again) == {"0": 10, "1": 10, "2": 10, "3": 10}
    assert again[:30] == before


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (["model.name=resnet999"], KeyError, r"unknown model 'resnet999'.*resnet56"),
        (
            ["data=imagenet", "data.data_dir=/no/such/imagenet"],
            FileNotFoundError,
            "/no/such/imagenet/train",
        ),
        (
            ["data=cifar10", "data.data_dir=/no/such/c10", "data.download=false"],
            FileNotFoundError,
            "/no/such/c10",
        ),
        (["probe.n=3", "graph.k=3"], ValueError, "probe.n=3 must be larger than graph.k=3"),
        (["data.num_classes=100"], ValueError, "num_classes=100 does not match"),
        (["graph.metric=euclid"], ValueError, "'euclid' is not one of"),
    ],
)
def test_bad_configs_fail_before_training(tmp_path: Path, overrides, error, match) -> None:
    with pytest.raises(error, match=match):
        train(make_cfg(tmp_path, *FAST, *overrides))
    assert not (tmp_path / "checkpoints").exists()


def test_probe_larger_than_test_split_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"probe size n=600 must be in \[1, 540\]"):
        train(make_cfg(tmp_path, *FAST, "probe.n=600"))
    assert not (tmp_path / "checkpoints").exists()


def _hydra(mode: RunMode, launcher: str) -> SimpleNamespace:
    return SimpleNamespace(mode=mode, launcher=OmegaConf.create({"_target_": launcher}))


def test_multirun_of_relaunching_ddp_is_refused(tmp_path: Path) -> None:
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    slurm = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    ddp = make_cfg(tmp_path, "trainer=ddp_cpu")
    for launcher in (basic, joblib):
        with pytest.raises(ValueError, match="torchrun --nproc_per_node") as info:
            check_config(ddp, _hydra(RunMode.MULTIRUN, launcher))
        assert "tasks_per_node" in str(info.value)
    check_config(ddp, _hydra(RunMode.MULTIRUN, slurm))  # one SLURM task per GPU: fine
    check_config(ddp, _hydra(RunMode.RUN, basic))  # a single DDP job: fine
    spawn = make_cfg(tmp_path, "trainer=ddp_cpu", "trainer.strategy=ddp_spawn")
    check_config(spawn, _hydra(RunMode.MULTIRUN, basic))
    one = make_cfg(tmp_path, "trainer=ddp_cpu", "trainer.devices=1")
    check_config(one, _hydra(RunMode.MULTIRUN, basic))


def test_resolve_wandb_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_wandb_mode("auto") == "offline"  # no key anywhere
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    (tmp_path / "netrc").chmod(0o600)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"
    with pytest.raises(ValueError, match="'cloud' is not one of"):
        resolve_wandb_mode("cloud")


def _wandb_records(path: Path) -> list[bytes]:
    """Records of a .wandb file (LevelDB log format: 32 KiB blocks, 7-byte chunk headers)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        space = 32768 - pos % 32768
        if space < 7:  # block trailer padding
            pos += space
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        if kind == 1:  # full
            records.append(chunk)
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            records.append(pending + chunk)
    return records


@pytest.mark.slow
def test_wandb_offline_run_holds_the_logged_keys(tmp_path: Path, monkeypatch) -> None:
    import wandb
    from wandb.proto import wandb_internal_pb2

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # A job that fails after W&B started must close its run (the next sweep job starts clean).
    with pytest.raises(ValueError, match="probe size"):
        train(make_cfg(tmp_path / "failing", *FAST, "logger=wandb", "probe.n=5000"))
    assert wandb.run is None

    run_dir = tmp_path / "ok"
    train(make_cfg(run_dir, *FAST, "logger=many", "trainer.max_epochs=1"))
    assert wandb.run is None
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    # The W&B service writes the run log in 32 KiB blocks and may close it after finish()
    # returns (seen once under load: only the header was on disk). Shut the service down and
    # wait for the run's final `exit` record before reading it.
    wandb.teardown()
    deadline = time.monotonic() + 60
    while True:
        records = [wandb_internal_pb2.Record.FromString(raw) for raw in _wandb_records(run_file)]
        kinds = [record.WhichOneof("record_type") for record in records]
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "exit" in kinds, f"the run log never got its exit record: {kinds}"
    keys: set[str] = set()
    run_info = None
    for record, kind in zip(records, kinds, strict=True):
        if kind == "history":
            keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "run":
            run_info = record.run
    assert {
        "modularity/layer_01",
        "modularity/layer_10",
        "train/loss",
        "val/acc",
        "test/acc",
    } <= keys
    assert {"figures/modularity_curves/_type", "modularity/table/_type"} <= keys
    # name and tags follow the choices (conf/recipe): <data>_<model>, [<recipe>, <data>, <model>]
    assert run_info is not None and run_info.run_group == "digits_resnet20"
    assert list(run_info.tags) == ["demo-recipe", "digits", "resnet20"]
    media = run_file.parent / "files" / "media"
    assert list(media.glob("images/figures/modularity_heatmap_*.png"))
    assert list(media.glob("table/modularity/table_*.table.json"))
    assert (run_dir / "metrics.csv").is_file() and list((run_dir / "tensorboard").glob("events.*"))


def _preset_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob("train_*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("preset", _preset_names())
def test_every_training_preset_composes_and_runs_a_fast_dev_run(
    tmp_path: Path, preset: str
) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        recipe = compose("train", overrides=[f"experiment={preset}"])
    num_classes = int(recipe.data.num_classes)
    overrides = [
        f"experiment={preset}",
        "data=fake",  # no downloads: same classes, small images
        f"data.num_classes={num_classes}",
        f"data.in_channels={recipe.data.in_channels}",
        "data.batch_size=4",
        f"data.test_size={max(64, 2 * num_classes + 2)}",
        "trainer=cpu",
        "debug=fast_dev_run",
        "trainer.enable_progress_bar=false",
        f"probe.n={max(20, num_classes + 1)}",  # N must exceed the number of classes
    ]
    result = train(make_cfg(tmp_path, *overrides))
    assert math.isfinite(result["test"]["test/acc"])
    rows = read_csv(tmp_path / "modularity.csv")
    assert rows and all(math.isfinite(float(r["modularity"])) for r in rows)
    assert OmegaConf.load(tmp_path / "config.yaml").model.name == recipe.model.name


def test_bf16_and_channels_last_options_train(tmp_path: Path) -> None:
    result = train(
        make_cfg(
            tmp_path,
            *FAST,
            "trainer.max_epochs=1",
            "trainer.precision=bf16-mixed",
            "module.channels_last=true",
            "module.label_smoothing=0.1",
        )
    )
    assert math.isfinite(result["test"]["test/loss"])
    module = load_classifier(tmp_path / "checkpoints" / "last.ckpt")
    assert module.hparams.channels_last and module.hparams.label_smoothing == 0.1


def test_compile_option_keeps_the_state_dict_clean() -> None:
    net = {"name": "resnet20", "num_classes": 10, "in_channels": 1}
    compiled = ImageClassifier(net, [0.5], [0.25], compile=True)
    eager = ImageClassifier(net, [0.5], [0.25])
    assert compiled.__dict__["_compiled_model"] is not None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no `_orig_mod.` copies


@pytest.mark.parametrize("launcher", ["local_parallel", "slurm", "local_submitit"])
def test_launcher_configs_compose(launcher: str) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"hydra/launcher={launcher}", "trainer=ddp", "trainer.devices=4"],
            return_hydra_config=True,
        )
    target = cfg.hydra.launcher._target_
    expected = {
        "local_parallel": "JoblibLauncher",
        "slurm": "SlurmLauncher",
        "local_submitit": "LocalLauncher",
    }[launcher]
    assert target.endswith(expected)
    if launcher == "slurm":
        assert cfg.hydra.launcher.tasks_per_node == 1 and cfg.hydra.launcher.gpus_per_node == 1
        assert str(cfg.hydra.launcher.submitit_folder).endswith("/.submitit/%j")
