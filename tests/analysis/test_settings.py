"""AnalysisSettings: one object for the graph, tap and batching settings of every analysis."""

import dataclasses

import pytest
import torch

from dnn_modularity.analysis.settings import AnalysisSettings


def test_from_cfg_reads_graph_probe_seed_batch_and_dtype(compose_config) -> None:
    cfg = compose_config(
        "analyze",
        "graph.k=7",
        "graph.metric=pearson",
        "graph.block_size=64",
        "probe.taps=[1,3]",
        "seed=5",
        "batch_size=32",
        "feature_dtype=float16",
    )
    settings = AnalysisSettings.from_cfg(cfg)
    assert settings == AnalysisSettings(
        k=7, metric="pearson", taps=[1, 3], seed=5, batch_size=32, block_size=64,
        dtype=torch.float16,
    )  # fmt: skip
    assert settings.record_fields() == {"tap": "custom", "k": 7, "metric": "pearson", "seed": 5}
    assert settings.engine_kwargs() == {"k": 7, "metric": "pearson", "block_size": 64}
    assert settings.feature_kwargs() == {"taps": [1, 3], "batch_size": 32, "dtype": torch.float16}
    assert settings.replace(seed=9).seed == 9 and settings.seed == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.k = 3  # type: ignore[misc]


def test_defaults_match_the_config_defaults(compose_config) -> None:
    cfg = compose_config("analyze")
    settings = AnalysisSettings.from_cfg(cfg)
    assert settings.tap_name == "block" and settings.dtype is None
    assert (settings.k, settings.metric, settings.batch_size) == (
        int(cfg.graph.k),
        str(cfg.graph.metric),
        int(cfg.batch_size),
    )


def test_a_bad_feature_dtype_names_the_choices(compose_config) -> None:
    cfg = compose_config("analyze", "feature_dtype=float8")
    with pytest.raises(ValueError, match=r"feature_dtype='float8'.*float16"):
        AnalysisSettings.from_cfg(cfg)
