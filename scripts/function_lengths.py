"""Print the longest functions of Python files: name, file, lines, parameters.

For issue 11's closing note ("each step at most about 40 lines"): a function's length is
what ``ast`` says it spans, from its ``def`` (decorators not counted) to its last line,
docstring and blank lines included. Nested functions are listed on their own and also
count inside the function that holds them.

    python scripts/function_lengths.py operator/kadapt_operator/runtime/reconcile.py --top 5
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FunctionLength:
    """One function (or method) and how long it is."""

    name: str
    path: str
    first_line: int
    lines: int
    parameters: int


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Parameters a caller can pass: ``self``/``cls`` not counted, ``*args``/``**kwargs`` each one."""
    args = node.args
    named = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if named and named[0].arg in ("self", "cls"):
        named = named[1:]
    return len(named) + (args.vararg is not None) + (args.kwarg is not None)


def functions(path: Path) -> Iterator[FunctionLength]:
    """Every function and method in ``path``, with its qualified name (``Class.method``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def walk(node: ast.AST, prefix: str) -> Iterator[FunctionLength]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                end = child.end_lineno or child.lineno
                yield FunctionLength(name, str(path), child.lineno, end - child.lineno + 1, _parameters(child))
                yield from walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the ``--top`` longest functions of each path, longest first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="Python files")
    parser.add_argument("--top", type=int, default=3, help="how many functions per file (default 3)")
    args = parser.parse_args(argv)
    for path in args.paths:
        if not path.is_file():
            print(f"function_lengths: {path}: no such file", file=sys.stderr)
            return 2
        found = sorted(functions(path), key=lambda f: (-f.lines, f.first_line))
        for f in found[: args.top]:
            print(f"{f.lines:4d} lines  {f.parameters:2d} params  {f.path}:{f.first_line}  {f.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
