"""The house stays readable (issue #21): the layers are folders, no class is
over about 300 lines and no function over about 60.

"About": a class may reach 320 lines and a function 70 before this fails; a
longer one must be split into named steps, or listed in ``LONG`` with the
reason it is one thought (the list is meant to shrink, never to grow).
"""

from __future__ import annotations

import ast

from tests.conftest import REPO

PACKAGE = REPO / "daemon" / "redactd"
CLASS_LINES = 320
FUNCTION_LINES = 70

#: qualified name (module path:Class.function) -> why it stays whole
LONG: dict[str, str] = {}

#: The folders of the layers, top to bottom (pyproject's import contract checks
#: the arrows between them); nothing else at the package's top level.
LAYERS = ("cli", "service", "evaluation", "pipeline", "stages", "models", "core")


def _walk(node: ast.AST, rel: str, prefix: str, out: list[tuple[str, str, int]]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{child.name}"
            kind = "class" if isinstance(child, ast.ClassDef) else "function"
            assert child.end_lineno is not None
            out.append((kind, f"{rel}:{name}", child.end_lineno - child.lineno + 1))
            _walk(child, rel, name + ".", out)


def _spans() -> list[tuple[str, str, int]]:
    """(kind, qualified name, lines) of every class and function in the package."""
    out: list[tuple[str, str, int]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        _walk(ast.parse(path.read_text(encoding="utf-8")), rel, "", out)
    return out


def test_no_class_is_over_about_300_lines() -> None:
    long = [
        f"{name} ({n} lines)"
        for kind, name, n in _spans()
        if kind == "class" and n > CLASS_LINES and name not in LONG
    ]
    assert long == []


def test_no_function_is_over_about_60_lines() -> None:
    long = [
        f"{name} ({n} lines)"
        for kind, name, n in _spans()
        if kind == "function" and n > FUNCTION_LINES and name not in LONG
    ]
    assert long == []


def test_every_exception_is_still_long() -> None:
    """An entry of LONG whose function got short (or went) is removed from it."""
    sizes = {name: n for _kind, name, n in _spans()}
    stale = [name for name in LONG if sizes.get(name, 0) <= FUNCTION_LINES]
    assert stale == []


def test_the_package_top_level_holds_only_the_layer_folders() -> None:
    entries = {
        p.name
        for p in PACKAGE.iterdir()
        if p.name not in {"__pycache__", "__init__.py", "py.typed", "data"}
    }
    assert entries == set(LAYERS)
