"""hil's layers: every import of hil, drivers and simulators points down, never up nor across between real and
simulated instruments, including imports made inside functions.

Layers, bottom to top (a module may import its own layer and those below it):

0. what every layer uses and that uses none: errors, configuration helpers, clocks, plugin hooks, file locks, data
   sets, and the noiseless physics (`hil.physics`, shared by simulators and physics twins);
1. `hil.transport`; 2. instruments, limits and the registry of names; 3. `drivers` and `simulators`, side by side
   (neither imports the other); 4. systems; 5. the twin and `hil.nn`; 6. the training methods; 7. protocols, labs,
   the run folder, its state capture and reports; 8. the orchestrator; 9. the command and the test kit.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import hil.errors
from hil.errors import HilError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hil", "drivers", "simulators")

#: Each module (by the longest prefix of its name given here): its layer, and its side where layer 3 has two.
LAYERS: dict[str, tuple[int, str]] = {
    **{name: (0, "") for name in ("hil", "hil.errors", "hil.config", "hil.clock", "hil.hooks", "hil.filelock",
                                  "hil.datasets", "hil.physics")},
    "hil.transport": (1, ""),
    **{name: (2, "") for name in ("hil.instruments", "hil.limits", "hil.registry")},
    "drivers": (3, "drivers"),
    "simulators": (3, "simulators"),
    "hil.systems": (4, ""),
    "hil.twin": (5, ""),
    "hil.nn": (5, ""),
    "hil.methods": (6, ""),
    **{name: (7, "") for name in ("hil.protocol", "hil.lab", "hil.store", "hil.state", "hil.report")},
    "hil.orchestrator": (8, ""),
    **{name: (9, "") for name in ("hil.cli", "hil.__main__", "hil.testing")},
}


def _modules() -> dict[str, Path]:
    """Every module of the three packages by its dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """The modules ``name`` imports (at the top or inside a function), each with its line; relative imports
    resolved."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[:len(package) - node.level + 1], *([node.module] if node.module else [])])
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]  # a module, or a name in one
    return found


def _layer(name: str) -> tuple[int, str] | None:
    """The layer of module ``name``: that of the longest prefix of it in `LAYERS`, None where none is."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return LAYERS[".".join(parts[:end])]
    return None


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def test_every_module_is_on_a_layer() -> None:
    """A new module is placed on a layer here, so that the test below checks its imports."""
    assert [name for name in _modules() if _layer(name) is None] == []


def test_imports_point_down_the_layers() -> None:
    """No module imports one of a higher layer (the twin the run folder, a system a method) or, on the layer of
    instruments, one of the other side (a driver a simulator, a simulator a driver)."""
    wrong = []
    for name, path in _modules().items():
        layer, side = _layer(name) or (0, "")
        for imported, line in _imports(name, path):
            if not _ours(imported):
                continue
            target, target_side = _layer(imported) or (0, "")
            if target > layer or (target == layer and side != target_side):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {name} (layer {layer}) imports {imported} "
                             f"(layer {target})")
    assert wrong == []


def test_only_the_transport_touches_pyvisa_and_pyserial() -> None:
    """pyvisa, pyvisa-py and pyserial are used by `hil.transport` alone (the test kit builds its binary blocks with
    `hil.transport.definite_block`)."""
    libraries = {"pyvisa", "pyvisa_py", "serial"}
    touching = [f"{path.relative_to(ROOT)}:{line}: {imported}" for name, path in _modules().items()
                if name != "hil.transport" for imported, line in _imports(name, path)
                if imported.split(".")[0] in libraries]
    assert touching == []


def test_hils_errors_are_defined_in_hil_errors() -> None:
    """One hierarchy in `hil.errors`: every error of hil's (a subclass of `HilError`) is defined there, so that a
    caller finds and catches each one in one module (the run folder's errors, a stopped run's `Interrupted`)."""
    for name in _modules():
        if name != "hil.__main__":  # which runs the command
            importlib.import_module(name)
    classes, elsewhere = [HilError], []
    while classes:
        cls = classes.pop()
        classes += cls.__subclasses__()
        if _ours(cls.__module__) and cls.__module__ != hil.errors.__name__:
            elsewhere.append(f"{cls.__module__}.{cls.__qualname__}")
    assert elsewhere == []
