"""The package's layers, as tests: one folder per layer, imports only point down.

    core      sigmas, DSM loss, noise design, toy mixtures, figures, value checks (plain torch)
    nets      the score networks
    sampling  the samplers
    metrics   FID/KID, bits/dim, score error
    data      LightningDataModules                                  (Lightning, no Hydra)
    training  the LightningModule, callbacks, loggers, exact resume (Lightning, no Hydra)
    compare   the ablation report (reads run directories)
    workflow  Hydra: config checks, building, the entry points' work

A module may import its own folder and any folder below it, never one above; core, nets,
sampling and metrics load no Lightning, Hydra or OmegaConf; data and training no Hydra. No module
sits loose at the package root, and every import inside the package is relative.
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

LAYERS = ["core", "nets", "sampling", "metrics", "data", "training", "compare", "workflow"]
MATH_LAYERS = LAYERS[:4]
MATH_MODULES = [f"ncsn.{layer}.{m.name}" for layer in MATH_LAYERS for m in pkgutil.iter_modules([str(PKG / layer)])]
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


def test_every_module_sits_in_a_layer_folder():
    loose = sorted(p.name for p in PKG.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules at the package root (put them in a layer folder): {loose}"
    folders = sorted(p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert folders == sorted(LAYERS), f"folders that are not layers (add them to LAYERS): {folders}"


def _arrows_up(layer: str) -> list[str]:
    above = tuple(f"ncsn.{x}" for x in LAYERS[LAYERS.index(layer) + 1 :])
    return _violations(_py_files(layer), above)


def test_no_import_points_up_a_layer():
    bad = [v for layer in LAYERS for v in _arrows_up(layer)]
    assert bad == [], "imports of a higher layer:\n" + "\n".join(bad)


def test_math_layers_import_no_framework_and_data_training_no_hydra():
    bad = _violations(_py_files(*MATH_LAYERS), FRAMEWORKS)
    bad += _violations(_py_files("data", "training"), ("hydra", "omegaconf"))
    assert bad == [], "\n".join(bad)


def test_the_layer_check_sees_an_arrow_up(tmp_path, monkeypatch):
    """The check is live: a data module importing training (the old tangle) is reported."""
    fake = tmp_path / "ncsn"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "base.py").write_text("from ..training.resume import capture_rng_states\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    found = [v.split("ncsn/", 1)[1] for v in _arrows_up("data")]
    assert found == ["data/base.py:1: ncsn.training.resume", "data/base.py:1: ncsn.training.resume.capture_rng_states"]


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
    assert {"ncsn.core.losses", "ncsn.core.speed", "ncsn.training.resume", "lightning"} <= seen
    seen = {m for _, m in _imports(PKG / "nets" / "refinenet.py")}
    assert {"ncsn.nets.layers", "ncsn.nets.layers.RefineBlock", "torch"} <= seen
