"""Packaging beyond what pyproject.toml can say: ship the top-level `conf/` inside the package.

The configs live at the repository's top level (`conf/`, where users edit them); the wheel and
`pip install .` install them as `dnn_modularity/conf` so that an installed package finds them
(`dnn_modularity.config_dir`).
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("src"), "dnn_modularity.conf"],
    package_dir={"": "src", "dnn_modularity.conf": "conf"},
    package_data={
        "dnn_modularity": ["py.typed", "reference/*.json"],
        "dnn_modularity.conf": ["*.yaml", "**/*.yaml"],
    },
)
