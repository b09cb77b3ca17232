"""The package list, which pyproject.toml cannot say: every package under src/ plus the configs.

The configs live at the repository's top level (`conf/`, where users edit them); the wheel and
`pip install .` install them as `dnn_modularity/conf` (package-dir and package-data in
pyproject.toml) so that an installed package finds them (`dnn_modularity.config_dir`).
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages("src"), "dnn_modularity.conf"])
