"""CPU caps of the slow attacks: only lower values, say what changed; the paper preset has none."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from dnn_modularity.analysis.adversarial import apply_caps
from dnn_modularity.runtime import CONF_DIR


def _analyze_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("analyze", overrides=["analysis=adversarial", *overrides])


def test_caps_lower_values_and_record_original_and_used() -> None:
    attacks = {
        "fgsm": {"params": {"eps": 0.3}},
        "cw": {"params": {"max_iterations": 50}, "max_images": None},
        "onepixel": {"params": {}, "max_images": 30},
    }
    caps = {
        "cw": {"max_images": 100, "binary_search_steps": 5, "max_iterations": 100},
        "onepixel": {"max_images": 100, "max_pixels": 16},
    }
    settings, capped = apply_caps(attacks, caps, pool_size=500)
    assert capped == {
        "cw": {
            "max_images": {"original": 500, "used": 100},
            "binary_search_steps": {"original": 9, "used": 5},  # advertorch's default
        },
        "onepixel": {"max_pixels": {"original": 100, "used": 16}},  # 30 images: under the cap
    }
    assert settings["cw"]["params"] == {"max_iterations": 50, "binary_search_steps": 5}
    assert settings["cw"]["max_images"] == 100 and settings["cw"]["capped"] == capped["cw"]
    assert settings["onepixel"]["max_images"] == 30
    assert settings["fgsm"] == {"params": {"eps": 0.3}} and "capped" not in settings["fgsm"]
    assert attacks["cw"]["params"] == {"max_iterations": 50}  # the input is not modified


def test_bad_caps_are_refused() -> None:
    with pytest.raises(ValueError, match=r"cap 'nb_iter' for attack 'cw' is not one of.*max_iter"):
        apply_caps({"cw": {}}, {"cw": {"nb_iter": 3}}, pool_size=10)
    with pytest.raises(KeyError, match="unknown attack 'cwl2'"):
        apply_caps({"cw": {}}, {"cwl2": {"max_images": 3}}, pool_size=10)


def test_default_config_caps_the_slow_attacks_and_the_paper_preset_does_not() -> None:
    caps = _analyze_cfg().analysis.cpu_caps
    assert set(caps) == {"jsma", "cw", "onepixel", "localsearch"}
    assert all("max_images" in c for c in caps.values())
    assert _analyze_cfg("experiment=fig6a_adversarial").analysis.cpu_caps is None
