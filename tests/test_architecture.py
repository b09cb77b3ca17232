"""The package's import rules (README "Architecture"), read from the source with ``ast``.

- the engine (``graph/``) imports only the standard library, torch, numpy and itself;
- a module imports only from its own layer or the layers below it (commands on top);
- a package or third-party import inside a function says why on the same or the line before
  (an optional or slow dependency, or an import cycle).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dnn_modularity"

#: Top-level module or package -> layer; a module may import its own layer and those below.
LAYERS: dict[str, int] = {
    # engine
    "graph": 0,
    # foundations
    "": 1,  # the package's own __init__ (config_dir)
    "models": 1,
    "data": 1,
    "taps": 1,
    "metrics": 1,
    "stats": 1,
    "records": 1,
    "reference": 1,
    "checkpoints": 1,
    "progress": 1,
    "console": 1,
    "conf": 1,
    # run plumbing
    "runtime": 2,
    "loggers": 2,
    "rundir": 2,
    # libraries
    "analysis": 3,
    "pruning": 3,
    "plots": 3,
    "attacks": 3,
    "callbacks": 3,
    "sweeps": 3,
    "linear_probe": 3,
    "layer_diagnostics": 3,
    # commands
    "train": 4,
    "analyze": 4,
    "prune": 4,
    "report": 4,
}
COMMANDS = {name for name, layer in LAYERS.items() if layer == 4}
ENGINE_ALLOWED = {"torch", "numpy", "dnn_modularity"}
ENGINE_ALLOWED_MODULES = {"scipy.linalg"}
"""Whole modules the engine may import beyond those packages: scipy's BLAS wrappers (``ssyrk``)."""


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[ast.stmt, str]]:
    """Every import statement of ``path`` with the absolute module it names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append((node, ".".join([*base, *([node.module] if node.module else [])])))
            else:
                found.append((node, str(node.module)))
    return found


def _group(module: str) -> str:
    """``dnn_modularity.analysis.curve`` -> ``analysis``; the package itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def engine_violations() -> list[str]:
    """Imports of ``graph/`` outside the standard library, torch, numpy, scipy.linalg and itself."""
    out = []
    for path in _modules():
        if _group(_name(path)) != "graph":
            continue
        for node, module in _imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or module in ENGINE_ALLOWED_MODULES:
                continue
            if top not in ENGINE_ALLOWED or (top == "dnn_modularity" and _group(module) != "graph"):
                out.append(f"{_name(path)}:{node.lineno} imports {module}")
    return out


def layer_violations() -> list[str]:
    """Imports of a package module from a layer above the importing module's."""
    out = []
    for path in _modules():
        own = _group(_name(path))
        assert own in LAYERS, f"{_name(path)}: add {own!r} to LAYERS (and the README table)"
        for node, module in _imports(path):
            if not module.startswith("dnn_modularity"):
                continue
            other = _group(module)
            if LAYERS.get(other, 0) > LAYERS[own]:
                what = "a command" if other in COMMANDS else f"layer {LAYERS[other]}"
                out.append(f"{_name(path)}:{node.lineno} imports {module} ({what})")
    return out


def unexplained_local_imports() -> list[str]:
    """Package or third-party imports inside a function without a comment saying why."""
    out = []
    for path in _modules():
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                module = node.module if isinstance(node, ast.ImportFrom) else names[0]
                top = (module or "").split(".")[0]
                if top in sys.stdlib_module_names or (
                    isinstance(node, ast.ImportFrom) and node.level
                ):
                    continue
                same = lines[node.lineno - 1]
                before = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                if "#" not in same and not before.startswith("#"):
                    out.append(f"{_name(path)}:{node.lineno} imports {module} in a function")
    return out


@pytest.mark.parametrize(
    "check",
    [engine_violations, layer_violations, unexplained_local_imports],
    ids=lambda f: f.__name__,
)
def test_import_rules(check) -> None:
    assert check() == []


def test_the_rules_catch_violations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rule reports a planted violation (so an empty report means something)."""
    fake = tmp_path / "dnn_modularity"
    (fake / "graph").mkdir(parents=True)
    (fake / "records.py").write_text(
        "def f():\n    from dnn_modularity.train import main\n    import yaml\n"
    )
    (fake / "graph" / "bad.py").write_text("import scipy\nfrom dnn_modularity import records\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert engine_violations() == [
        "dnn_modularity.graph.bad:1 imports scipy",
        "dnn_modularity.graph.bad:2 imports dnn_modularity",
    ]
    assert "dnn_modularity.records:2 imports dnn_modularity.train (a command)" in layer_violations()
    assert unexplained_local_imports() == [
        "dnn_modularity.records:2 imports dnn_modularity.train in a function",
        "dnn_modularity.records:3 imports yaml in a function",
    ]
