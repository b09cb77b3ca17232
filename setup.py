"""The package list, which pyproject.toml cannot say: every package under src/ plus the configs.

`hydra_plugins` is a namespace package (Hydra finds plugins there; it must have no
`__init__.py`), which `find_packages` skips, hence `find_namespace_packages` for it.

The configs live at the repository's top level (`conf/`, where users edit them); the wheel and
`pip install .` install them as `dnn_modularity/conf` (package-dir and package-data in
pyproject.toml) so that an installed package finds them (`dnn_modularity.config_dir`).
"""

from setuptools import find_namespace_packages, find_packages, setup

setup(
    packages=[
        *find_packages("src"),
        *find_namespace_packages("src", include=["hydra_plugins", "hydra_plugins.*"]),
        "dnn_modularity.conf",
    ]
)
