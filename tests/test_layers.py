"""The package's layout: every import runs down the layer order of docs/DESIGN.md, no import cycles,
small modules, few modules loose at the top of the package."""
import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jbim_reid"
MAX_LINES = 500


def layer_order() -> Dict[str, int]:
    """``{'commands/': 2, 'cli.py': 0, ...}`` from the first section (``## Layers``) of docs/DESIGN.md."""
    text = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    order = {}
    rows = [line for line in section.splitlines() if line.startswith("- `")]
    for rank, line in enumerate(rows):
        head = line[2:].split(":", 1)[0]
        for name in re.findall(r"`([^`]+)`", head):
            order[name] = rank
    return order


def modules() -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def layer_name(module: str) -> str:
    """The name docs/DESIGN.md gives ``module``'s layer: ``'training/'``, ``'cli.py'`` or ``'jbim_reid'``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "jbim_reid"
    if (PACKAGE / parts[1]).is_dir():
        return f"{parts[1]}/"
    return f"{parts[1]}.py"


def imports(mods: Dict[str, Path]) -> Set[Tuple[str, str]]:
    """``(importer, imported)`` pairs between modules of the package, module-level and inside functions."""
    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges = set()
    for module, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [t if t in mods else node.module for t in targets]
            elif isinstance(node, ast.ImportFrom):
                pytest.fail(f"{path}: relative import; the package imports by absolute names")
            for target in targets:
                target = resolve(target) if target.startswith("jbim_reid") else ""
                if target and target != module:
                    edges.add((module, target))
    return edges


def test_design_names_a_layer_for_every_module():
    order = layer_order()
    assert len(set(order.values())) >= 8, "docs/DESIGN.md's '## Layers' list was not found"
    missing = sorted({layer_name(m) for m in modules()} - set(order))
    assert not missing, f"docs/DESIGN.md's layer map does not place {missing}"


def test_every_import_runs_down_the_layer_order():
    order, mods = layer_order(), modules()
    upward = [f"{a} -> {b} ({layer_name(a)} imports {layer_name(b)}, a layer above or beside it)"
              for a, b in sorted(imports(mods))
              if layer_name(a) != layer_name(b) and order[layer_name(b)] <= order[layer_name(a)]
              and not (order[layer_name(b)] == order[layer_name(a)] and layer_name(a) != "jbim_reid")]
    assert not upward, "\n".join(upward)


def test_the_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The check is not vacuous: a models module importing the runner is reported."""
    mods = modules()
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from jbim_reid.training.runner import load_config\n")
    mods["jbim_reid.models.fake"] = fake
    order = layer_order()
    bad = [(a, b) for a, b in imports(mods) if a == "jbim_reid.models.fake"
           and order[layer_name(b)] < order[layer_name(a)]]
    assert bad == [("jbim_reid.models.fake", "jbim_reid.training.runner")]


def test_no_import_cycles():
    edges = imports(modules())
    graph: Dict[str, List[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
    state: Dict[str, int] = {}
    cycles = []

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, [])):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("folder", ["jbim_reid", "benchmarks"])
def test_no_module_over_500_lines(folder):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_at_most_three_modules_at_the_top_of_the_package():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 3, loose


def test_public_names_keep_working():
    import jbim_reid
    import jbim_reid.cli
    import jbim_reid.datasets
    import jbim_reid.metrics
    import jbim_reid.models
    import jbim_reid.transforms

    assert callable(jbim_reid.CrossResolutionMatcher) and callable(jbim_reid.OnnxMatcher)
    assert callable(jbim_reid.metrics.evaluate_rank) and callable(jbim_reid.transforms.resolution_aug_range)
    assert callable(jbim_reid.cli.main) and "train" in jbim_reid.cli.COMMANDS
    assert jbim_reid.models.JBIM and jbim_reid.datasets.CAVIAR
