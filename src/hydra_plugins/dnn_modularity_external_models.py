"""Hydra plugin: ``model=torchvision:<name>`` / ``model=timm:<name>`` as config-group choices.

The ``model`` group of dnn-modularity's configs holds one YAML file per model of its own zoo.
Models of other libraries are built by name (:mod:`dnn_modularity.models.external`), and this
plugin lets the command line choose them like any other group option::

    python -m dnn_modularity.train model=torchvision:resnet18
    python -m dnn_modularity.analyze -m model=torchvision:resnet18,torchvision:vgg11 ...

For a choice ``model=<source>:<name>`` (source ``torchvision`` or ``timm``) the config source
below answers with the config ``{name: <source>:<name>, num_classes: ${data.num_classes},
in_channels: ${data.in_channels}}``, the same shape as the zoo's files; an unknown model name is
refused when the model is built, with the library's valid names. Hydra discovers the two classes
(a config source and the search-path entry that adds it) in the ``hydra_plugins`` namespace
package. The source answers for nothing else: any other config, in this or another application,
is found where it was before.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

#: The group these choices belong to, and the name prefixes answered (models.external's).
GROUP = "model"
SOURCES = ("torchvision", "timm")
SCHEME = "dnn-modularity-external-models"


def _choice(config_path: str) -> str | None:
    """``"model/torchvision:resnet18.yaml"`` -> ``"torchvision:resnet18"``; else None."""
    path = config_path[: -len(".yaml")] if config_path.endswith(".yaml") else config_path
    group, _, name = path.partition("/")
    source, colon, model = name.partition(":")
    if group != GROUP or not colon or source not in SOURCES or not model or "/" in model:
        return None
    return name


class ExternalModelConfigSource(ConfigSource):
    """Configs ``model/<source>:<name>`` for every torchvision / timm model name."""

    @staticmethod
    def scheme() -> str:
        """URL scheme of this source in the search path."""
        return SCHEME

    def load_config(self, config_path: str) -> ConfigResult:
        """The model config of a ``model/<source>:<name>`` choice."""
        name = _choice(config_path)
        if name is None:
            raise ConfigLoadError(f"not an external model config: {config_path}")
        node: Any = OmegaConf.create(
            {
                "name": name,
                "num_classes": "${data.num_classes}",
                "in_channels": "${data.in_channels}",
            }
        )
        return ConfigResult(
            config=node,
            path=f"{self.scheme()}://{self.path}",
            provider=self.provider,
            header={"package": None},
        )

    def available(self) -> bool:
        """Always available (nothing to read)."""
        return True

    def is_group(self, config_path: str) -> bool:
        """Only the ``model`` group (and the root it hangs from)."""
        return config_path.strip("/") in ("", GROUP)

    def is_config(self, config_path: str) -> bool:
        """``model/<source>:<name>`` choices only."""
        return _choice(config_path) is not None

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        """Nothing to list: the names are open-ended (the libraries list them)."""
        return []


class ExternalModelSearchPath(SearchPathPlugin):
    """Adds :class:`ExternalModelConfigSource` at the end of every search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Append the source (after the application's own configs, which win)."""
        search_path.append(provider="dnn-modularity", path=f"{SCHEME}://")
