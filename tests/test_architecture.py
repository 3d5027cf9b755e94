"""The layout of ARCHITECTURE.md, checked: imports go one way along the data flow, no circles, no streamlit.

Every ``import`` in wkviz/ is read with ``ast`` (imports inside functions count too: a lazy import is still a
dependency), so a module reaching back up the chain fails here rather than in a review.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "wkviz"

#: Stage of each top-level part of wkviz: a module may import only from its own stage or a lower one.
STAGES = {
    "errors": 0, "hypers": 0, "presets": 0, "runtime": 0, "geometry": 0, "cache": 0, "files": 0,  # the foundation
    "data": 1,
    "engine": 2,
    "scale": 3,  # tiles of the engine's kernels; models may stream from a store
    "models": 4,
    "evaluation": 5,
    "calculator": 5,  # an ASE calculator from a fitted model
    "views": 6,
    "cli": 7,  # beside the flow, on top of everything
    "__main__": 7,
}
#: Within the engine, the order of the flow (spherical is the maths every step uses).
ENGINE_ORDER = ["spherical", "neighbors", "density", "nu1", "wigner", "tiles", "estimate", "kernels", "gradients",
                "features"]


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: pathlib.Path) -> list[tuple[str, int, bool]]:
    """(imported wkviz module, line, at module level) for every import statement of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` names a sub-module when one exists
            targets = []
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                as_path = ROOT / pathlib.Path(*sub.split("."))
                targets.append(sub if as_path.with_suffix(".py").exists() or as_path.is_dir() else mod)
        else:
            continue
        for t in targets:
            if t == "wkviz" or t.startswith("wkviz."):
                found.append((t, node.lineno, id(node) in top_level))
    return found


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "static" not in p.parts)


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_of_wkviz_has_a_stage():
    parts = {_part(_module_name(p)) for p in _modules()} - {"__init__"}
    assert parts <= set(STAGES), f"add {sorted(parts - set(STAGES))} to STAGES and to ARCHITECTURE.md"


def test_no_module_reaches_back_up_the_data_flow():
    bad = []
    for path in _modules():
        name = _module_name(path)
        if name == "wkviz":
            continue  # the façade: lazy re-exports of the public names
        own = STAGES[_part(name)]
        for target, line, _ in _imports(path):
            if target == "wkviz":
                continue
            theirs = STAGES.get(_part(target))
            if theirs is not None and theirs > own:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
            if _part(name) == _part(target) == "engine":
                a, b = name.split(".")[2:3], target.split(".")[2:3]
                if a and b and a[0] in ENGINE_ORDER and b[0] in ENGINE_ORDER \
                        and ENGINE_ORDER.index(b[0]) > ENGINE_ORDER.index(a[0]):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} (later in the engine)")
    assert not bad, "imports against the data flow:\n" + "\n".join(bad)


def test_wkviz_never_imports_streamlit():
    bad = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] == "streamlit"]
    assert not bad


def test_no_import_circles_at_module_level():
    graph = {}
    for path in _modules():
        name = _module_name(path)
        graph[name] = {t for t, _, top in _imports(path) if top and t != name}
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # a package's __init__ importing its own modules is how packages re-export, not a circle
            if not nxt.startswith(node + "."):
                visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, "import circles: " + "; ".join(" → ".join(c) for c in cycles)


@pytest.mark.parametrize("folder", ["wkviz", "pages"])
def test_no_module_is_a_warehouse(folder):
    """ARCHITECTURE.md's guide: no module over ~700 lines (a larger one mixes concerns)."""
    limit = 760
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py")
           if (n := len(p.read_text().splitlines())) > limit}
    assert not big, f"modules over {limit} lines: {big}"


def test_the_old_flat_module_paths_still_import_with_a_warning():
    import importlib
    import sys
    import warnings

    import wkviz
    from wkviz.engine import kernels

    sys.modules.pop("wkviz.kernels", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("wkviz.kernels")
    assert old is kernels
    assert any(issubclass(w.category, DeprecationWarning) and "wkviz.engine.kernels" in str(w.message)
               for w in caught)
    for name, new in wkviz.MOVED_MODULES.items():
        assert importlib.util.find_spec(new) is not None, f"{name} → {new} does not exist"


def test_the_import_reader_sees_relative_lazy_and_submodule_imports(tmp_path):
    """The checks above are only as good as the reader: it must resolve every form of import used here."""
    found = {t: top for t, _, top in _imports(PACKAGE / "engine" / "nu1.py")}
    assert found.get("wkviz.engine.density") is True  # from .density import ... at module level
    kernels = {t: top for t, _, top in _imports(PACKAGE / "engine" / "kernels.py")}
    assert kernels.get("wkviz.hypers") is True  # from ..hypers import Hypers
    lazy = {t: top for t, _, top in _imports(PACKAGE / "models" / "sparse.py")}
    assert lazy.get("wkviz.engine.kernels") is False  # imported inside a function
