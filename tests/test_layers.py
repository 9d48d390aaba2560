"""The package's import graph: no cycles, no module importing a layer above its own, no private names
taken from another package's public modules. Imports inside functions count too (they are dependencies
all the same); those under ``if TYPE_CHECKING:`` do not run and are skipped."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "emozoo"

#: bottom to top; a module may import its own layer and the ones below. A module is placed by its
#: longest matching prefix.
LAYERS = [
    ("errors, hook specs and the matplotlib loader", ["emozoo.errors", "emozoo.hookspecs", "emozoo._version",
                                                     "emozoo._plot"]),
    ("registries", ["emozoo._registry"]),
    ("config and safetensors I/O", ["emozoo._config", "emozoo._weights", "emozoo._checkpoint", "emozoo._profile",
                                    "emozoo.metrics", "emozoo.calibration", "emozoo.data.labels"]),
    ("models", ["emozoo._backbone", "emozoo._models"]),
    ("models, fusions and losses", ["emozoo.builtins"]),
    ("plugin manager", ["emozoo.plugins"]),
    ("Hub transport and detectors", ["emozoo._hub", "emozoo._detectors", "emozoo.builtins.detectors"]),
    ("builder", ["emozoo._pretrained", "emozoo._builder"]),
    ("data", ["emozoo.data", "emozoo.builtins.datasets"]),
    ("train, predict, bench, export", ["emozoo.train", "emozoo.inference", "emozoo.bench", "emozoo.export",
                                       "emozoo.workflows"]),
    ("publishing", ["emozoo._publish", "emozoo._modelcard"]),
    ("HTTP API", ["emozoo.serve"]),
    ("command line", ["emozoo.cli"]),
    ("the package", ["emozoo"]),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best = max((prefix for _, prefixes in LAYERS for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), key=len)
    return next(i for i, (_, prefixes) in enumerate(LAYERS) if best in prefixes)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    return skipped


def imports(module: str, path: Path) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` of every emozoo import in ``module``."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "emozoo"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "emozoo":
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.append((sub, None, node.lineno) if sub in MODULES else (source, alias.name, node.lineno))
    return found


GRAPH = {m: imports(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    assert "emozoo._builder" in MODULES and len(MODULES) > 30
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{m}:{line} imports {target} ({LAYERS[layer_of(target)][0]} is above {LAYERS[layer_of(m)][0]})"
              for m, deps in GRAPH.items() for target, _, line in deps
              if target in MODULES and layer_of(target) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    edges = {m: sorted({t for t, _, _ in deps if t in MODULES and t != m}) for m, deps in GRAPH.items()}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in edges:
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(cycles)


def _is_public(module: str) -> bool:
    return not any(part.startswith("_") for part in module.split(".")[1:])


def _private_names_taken(module: str, deps) -> list[str]:
    package = module.rpartition(".")[0]
    return [f"{module}:{line} takes {name} from {source}" for source, name, line in deps
            if name and name.startswith("_") and not name.startswith("__") and _is_public(source)
            and source.rpartition(".")[0] != package and source != package]


def test_no_private_name_is_taken_from_another_packages_public_module():
    taken = [msg for m, deps in GRAPH.items() for msg in _private_names_taken(m, deps)]
    assert not taken, "\n".join(taken)


@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_use_only_public_names(script):
    deps = imports(f"benchmarks.{script.stem}", script)
    private = [f"{script.name}:{line} imports {source}{'.' + name if name else ''}" for source, name, line in deps
               if (name or "").startswith("_") or not _is_public(source)]
    assert not private, "\n".join(private)


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    """The walker itself: a low module importing the builder, and two modules importing each other."""
    low = tmp_path / "low.py"
    low.write_text("def f():\n    from emozoo._builder import create\n")
    assert [(t, line) for t, _, line in imports("emozoo._registry", low)] == [("emozoo._builder", 2)]
    assert layer_of("emozoo._builder") > layer_of("emozoo._registry")
    assert _private_names_taken("emozoo.workflows.member", [("emozoo.train", "_Dist", 3)])


def test_no_module_outside_an_architectures_own_tests_its_name():
    """What an architecture is (flip, members, card text, tags) is asked of its ArchitectureCfg; comparing
    ``config.architecture`` with a name elsewhere would bring back the special cases."""
    import re

    import emozoo
    from emozoo._registry import ARCHITECTURES

    emozoo.load_plugins()
    found = []
    for entry in ARCHITECTURES.entries():
        owner = MODULES.get(entry.owner)
        test = re.compile(rf"""(==|!=)\s*["']{re.escape(entry.name)}["']|["']{re.escape(entry.name)}["']\s*(==|!=)"""
                          rf"""|\bin\s*\(\s*["']{re.escape(entry.name)}["']""")
        for module, path in MODULES.items():
            if path != owner:
                found += [f"{module}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
                          if test.search(line)]
    assert not found, "\n".join(found)


def test_the_public_surface_is_complete_and_documented():
    import inspect

    import emozoo

    wanted = {"create", "list_models", "list_backbones", "list_fusions", "list_distill_losses", "list_detectors",
              "list_datasets", "Fusion", "BackboneBase", "ArchitectureCfg", "PretrainedCfg", "push_to_hub", "pull",
              "save_pretrained", "face_transform", "register_backbone", "register_fusion", "register_distill_loss",
              "register_face_detector", "predict_proba"}
    assert wanted <= set(emozoo.__all__)
    undocumented = [name for name in emozoo.__all__ if (inspect.isfunction(obj := getattr(emozoo, name))
                                                        or inspect.isclass(obj)) and not inspect.getdoc(obj)]
    assert not undocumented
