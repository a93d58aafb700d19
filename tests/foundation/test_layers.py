"""The layer rules of DESIGN.md, read from the code itself.

Nothing but the composition root (rig/root.py), the virtual rig and `rig twin`
imports the virtual rig; nothing but the product profiles imports a profile's
package or names the product in code (comments and docstrings may point at it).
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

RIG = Path(__file__).resolve().parents[2] / "rig"
MAY_IMPORT_VIRTUAL = {RIG / "root.py", RIG / "cli" / "twin.py"}
PRODUCT_NEUTRAL = ("orchestration", "card", "hardware", "daemon", "packages")
# the profiles' own packages (rig/product/<name>/); rig.product and .profile are the registry
PROFILE_PACKAGES = {p.parent.name for p in (RIG / "product").glob("*/__init__.py")}


def _modules() -> list[Path]:
    return sorted(p for p in RIG.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement names, also those inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def test_the_rules_see_imports_inside_functions(tmp_path: Path) -> None:
    """The reader finds the lazy imports the old code used (so the test below can fail)."""
    sample = tmp_path / "m.py"
    sample.write_text(
        "def f():\n    from rig.virtual.twin import ensure_twin\n    import rig.virtual\n"
    )
    assert [m for _, m in _imports(sample)] == [
        "rig.virtual.twin",
        "rig.virtual.twin.ensure_twin",
        "rig.virtual",
    ]


def test_only_the_composition_root_imports_the_virtual_rig() -> None:
    offenders = [
        f"{path.relative_to(RIG.parent)}:{line}: {module}"
        for path in _modules()
        if RIG / "virtual" not in path.parents and path not in MAY_IMPORT_VIRTUAL
        for line, module in _imports(path)
        if module == "rig.virtual" or module.startswith("rig.virtual.")
    ]
    assert offenders == []


@pytest.mark.parametrize("layer", PRODUCT_NEUTRAL)
def test_the_layers_below_the_profiles_do_not_know_the_product(layer: str) -> None:
    """No import of a profile's package and no name or string that says OctoPrint."""
    offenders = []
    for path in sorted((RIG / layer).rglob("*.py")):
        where = path.relative_to(RIG.parent)
        offenders += [
            f"{where}:{line}: imports {m}"
            for line, m in _imports(path)
            if m.startswith("rig.product.") and m.split(".")[2] in PROFILE_PACKAGES
        ]
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        strings_are_docs = _docstring_lines(path)
        for tok in tokens:
            if tok.type == tokenize.COMMENT or tok.start[0] in strings_are_docs:
                continue
            if "octoprint" in tok.string.lower():
                offenders.append(f"{where}:{tok.start[0]}: {tok.string[:60]}")
    assert offenders == []


def _docstring_lines(path: Path) -> set[int]:
    """The lines of module, class and function docstrings."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                doc = body[0]
                lines.update(range(doc.lineno, (doc.end_lineno or doc.lineno) + 1))
    return lines
