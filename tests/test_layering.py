"""The package's three layers, as tests.

* math (no Lightning, no Hydra): ncsn.sigmas, losses, sampling, toy, noise_design, nets,
  metrics, figures, speed, checks;
* training (Lightning, no Hydra): ncsn.training, ncsn.data;
* workflow (Hydra): ncsn.workflow and the entry points.

Nothing imports upward, nets know nothing of sampling, training or the workflow, and every
import inside the package is relative.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "ncsn"

MATH_MODULES = [
    "ncsn.sigmas",
    "ncsn.losses",
    "ncsn.sampling",  # a module or a package: both import by this name
    "ncsn.toy",
    "ncsn.noise_design",
    "ncsn.nets",
    *sorted(f"ncsn.nets.{m.name}" for m in pkgutil.iter_modules([str(PKG / "nets")])),
    "ncsn.metrics",
    *sorted(f"ncsn.metrics.{m.name}" for m in pkgutil.iter_modules([str(PKG / "metrics")])),
    "ncsn.figures",
    "ncsn.speed",
    "ncsn.checks",
    "ncsn.loss_by_sigma",  # a file format (standard library), shared by training and compare
]
FRAMEWORKS = ("lightning", "lightning_fabric", "pytorch_lightning", "hydra", "omegaconf")


def _is_under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


_PROBE = """
import importlib, json, sys
prefixes = {frameworks!r}
def loaded():
    return {{m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in prefixes)}}
blame = {{}}
for name in {modules!r}:
    before = loaded()
    importlib.import_module(name)
    new = sorted(loaded() - before)
    if new:
        blame[name] = new[:5]
print(json.dumps(blame))
"""


def test_math_modules_import_neither_lightning_nor_hydra():
    """In a fresh interpreter, importing every math module loads no Lightning, Hydra or OmegaConf
    (the union of what each one imports; the first module that pulls one in is named)."""
    code = _PROBE.format(frameworks=FRAMEWORKS, modules=MATH_MODULES)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=SRC.parent, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    blame = json.loads(out.stdout.strip().splitlines()[-1])
    assert blame == {}, f"math modules that import a framework: {blame}"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (relative imports resolved;
    ``from . import x`` counts as importing the package and ``package.x``)."""
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1]  # the package a relative import starts from (for __init__: itself)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            out.append((node.lineno, module))
            out += [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return out


def _py_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (PKG / f).rglob("*.py"))


def _violations(files, forbidden) -> list[str]:
    return [
        f"{p.relative_to(SRC.parent)}:{line}: {module}"
        for p in files
        for line, module in _imports(p)
        if _is_under(module, forbidden)
    ]


def test_nets_import_nothing_from_sampling_training_or_workflow():
    files = _py_files("nets")
    assert len(files) >= 5
    bad = _violations(files, ("ncsn.sampling", "ncsn.training", "ncsn.workflow", "ncsn.data", *FRAMEWORKS))
    assert bad == [], "\n".join(bad)


def test_training_and_data_layers_know_no_hydra_or_workflow():
    files = _py_files("training", "data")
    assert len(files) >= 5
    bad = _violations(files, ("hydra", "omegaconf", "ncsn.workflow", "ncsn.compare", "ncsn.convert"))
    assert bad == [], "\n".join(bad)


def _math_files() -> list[Path]:
    files = []
    for name in MATH_MODULES:
        path = SRC.joinpath(*name.split("."))
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return sorted(set(files))


def test_math_layer_imports_nothing_upward():
    """Static twin of the subprocess test: no math module imports training, data or workflow."""
    files = _math_files()
    assert len(files) >= 15
    bad = _violations(files, ("ncsn.training", "ncsn.data", "ncsn.workflow", *FRAMEWORKS))
    assert bad == [], "\n".join(bad)


def test_imports_inside_the_package_are_relative():
    bad = [
        f"{p.relative_to(SRC.parent)}:{node.lineno}"
        for p in sorted(PKG.rglob("*.py"))
        for node in ast.walk(ast.parse(p.read_text(), str(p)))
        if (isinstance(node, ast.ImportFrom) and node.level == 0 and _is_under(node.module or "", ("ncsn",)))
        or (isinstance(node, ast.Import) and any(_is_under(a.name, ("ncsn",)) for a in node.names))
    ]
    assert bad == [], "absolute imports of ncsn inside the package (use relative ones):\n" + "\n".join(bad)


def test_the_static_checks_resolve_relative_imports():
    """The checks above are live: relative imports resolve to the modules they name."""
    seen = {m for _, m in _imports(PKG / "training" / "score_model.py")}
    assert {"ncsn.losses", "ncsn.speed", "ncsn.training.resume", "lightning"} <= seen
    seen = {m for _, m in _imports(PKG / "nets" / "refinenet.py")}
    assert {"ncsn.nets.layers", "ncsn.nets.layers.RefineBlock", "torch"} <= seen
