"""A static check that no SQL text is built from values: only from fixed fragments.

Ruff's S608 flags string-built SQL, but only some shapes of it, and a ``# noqa``
silences it. This scanner looks at every f-string, ``%`` format, ``.format()`` call
and ``+`` concatenation whose fixed text looks like SQL, and requires every value
put into it to be *trusted*: a literal, a number cast (``int(...)``, ``float(...)``),
a constant named in upper case, a local variable only ever assigned trusted values,
or a parameter of a function whose every call in the module passes trusted values
(a greatest fixed point, so helpers that pass fragments along are followed).
Anything else (a request value, a function argument from elsewhere) is reported.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Finding", "scan_paths", "scan_source"]

_SQL = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|TRUNCATE|COPY|ANALYZE|PRAGMA|VACUUM|"
    r"WHERE|VALUES|GRANT)\b"
    r"|(?i:\bselect\b[^\n]*\bfrom\b|\binsert\s+into\b|\bdelete\s+from\b|\bupdate\s+\w+\s+set\b)"
)
_CONSTANT = re.compile(r"^_?[A-Z][A-Z0-9_]*$")
_NUMBER_CASTS = {"int", "float", "bool", "len", "round"}


@dataclass(frozen=True)
class Finding:
    """SQL built from a value that is not known to be a fixed fragment."""

    path: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: SQL built from a non-constant value: {self.text}"


def _fixed_text(node: ast.expr) -> str:
    """The literal parts of a string-building expression."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_fixed_text(v) for v in node.values)
    if isinstance(node, ast.BinOp):
        return _fixed_text(node.left) + " " + _fixed_text(node.right)
    if _is_format_call(node):
        assert isinstance(node, ast.Call)
        assert isinstance(node.func, ast.Attribute)
        return _fixed_text(node.func.value)
    return ""


def _interpolated(node: ast.expr) -> list[ast.expr]:
    """The values an SQL-building expression puts into the text."""
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        right = node.right
        return list(right.elts) if isinstance(right, ast.Tuple) else [right]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return [node.left, node.right]
    if _is_format_call(node):
        assert isinstance(node, ast.Call)
        return [*node.args, *(k.value for k in node.keywords)]
    return []


def _is_format_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
    )


def _is_builder(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    return _is_format_call(node)


class _Function:
    """A function (or the module's top level, ``node=None``) and what its names hold."""

    def __init__(self, node: ast.FunctionDef | ast.AsyncFunctionDef | None) -> None:
        self.node = node
        self.params: list[str] = []
        self.assignments: dict[str, list[ast.expr]] = defaultdict(list)
        if node is not None:
            args = node.args
            self.params = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]

    def record(self, node: ast.AST) -> None:
        """Note what an assignment-like statement binds (unknown values as ``?``)."""
        unknown = ast.Name("?")
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.assignments[target.id].append(node.value)
                else:  # unpacking: not a plain fragment
                    self._unknown(target, unknown)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
            value = node.value if node.value is not None else unknown
            if isinstance(node, ast.AugAssign):  # x += v: x stays trusted only if v is
                value = ast.BinOp(ast.Name(node.target.id), ast.Add(), value)
            self.assignments[node.target.id].append(value)
        elif isinstance(node, ast.NamedExpr):
            self.assignments[node.target.id].append(node.value)
        elif isinstance(node, ast.For | ast.AsyncFor):
            self._unknown(node.target, unknown)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            self._unknown(node.optional_vars, unknown)

    def _unknown(self, target: ast.AST, unknown: ast.expr) -> None:
        for name in ast.walk(target):
            if isinstance(name, ast.Name):
                self.assignments[name.id].append(unknown)


class _Module:
    def __init__(self, tree: ast.Module) -> None:
        self.module = _Function(None)
        self.functions: dict[str, list[_Function]] = defaultdict(list)
        self.owner: dict[int, _Function] = {}
        self._visit(tree, self.module)
        self.calls: dict[str, list[tuple[ast.Call, _Function]]] = defaultdict(list)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name in self.functions:
                    self.calls[name].append((node, self.owner[id(node)]))
        self.trusted_params = self._fixed_point()

    def _visit(self, node: ast.AST, current: _Function) -> None:
        for child in ast.iter_child_nodes(node):
            self.owner[id(child)] = current
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = _Function(child)
                self.functions[child.name].append(inner)
                self._visit(child, inner)
            else:
                current.record(child)
                self._visit(child, current)

    def _fixed_point(self) -> set[tuple[int, str]]:
        # Every parameter starts trusted; one passed an untrusted value (or of a
        # function never called here: called from elsewhere) loses it, until stable.
        self.trusted_params = {
            (id(f), p) for funcs in self.functions.values() for f in funcs for p in f.params
        }
        changed = True
        while changed:
            changed = False
            for name, funcs in self.functions.items():
                sites = self.calls.get(name, [])
                for func in funcs:
                    for index, param in enumerate(func.params):
                        key = (id(func), param)
                        if key in self.trusted_params and not (
                            sites
                            and all(
                                self._argument_trusted(call, caller, func, index, param)
                                for call, caller in sites
                            )
                        ):
                            self.trusted_params.discard(key)
                            changed = True
        return self.trusted_params

    def _argument_trusted(
        self, call: ast.Call, caller: _Function, func: _Function, index: int, param: str
    ) -> bool:
        for keyword in call.keywords:
            if keyword.arg == param:
                return self.trusted(keyword.value, caller)
            if keyword.arg is None:
                return False  # **kwargs: unknown
        bound = isinstance(call.func, ast.Attribute) and func.params[:1] in (["self"], ["cls"])
        position = index - (1 if bound else 0)
        if position < 0:
            return True  # self / cls
        if any(isinstance(a, ast.Starred) for a in call.args):
            return False
        if position < len(call.args):
            return self.trusted(call.args[position], caller)
        return True  # left to its default, a literal of the signature

    def trusted(self, node: ast.expr, func: _Function, seen: frozenset[str] = frozenset()) -> bool:
        """Whether ``node`` can only hold a fixed fragment of SQL (or a number)."""
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Name):
            if _CONSTANT.match(node.id) or node.id in seen:
                return True
            if node.id in func.params and node.id not in func.assignments:
                return (id(func), node.id) in self.trusted_params
            values = func.assignments.get(node.id) or self.module.assignments.get(node.id)
            return bool(values) and all(
                self.trusted(v, func, seen | {node.id}) for v in values or ()
            )
        if isinstance(node, ast.JoinedStr):
            return all(
                self.trusted(v.value, func, seen)
                for v in node.values
                if isinstance(v, ast.FormattedValue)
            )
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
            return self.trusted(node.left, func, seen) and self.trusted(node.right, func, seen)
        if isinstance(node, ast.Tuple):
            return all(self.trusted(e, func, seen) for e in node.elts)
        if isinstance(node, ast.IfExp):
            return self.trusted(node.body, func, seen) and self.trusted(node.orelse, func, seen)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return node.func.id in _NUMBER_CASTS
        return False


def scan_source(source: str, path: str = "<string>") -> list[Finding]:
    """Findings in one module's source."""
    tree = ast.parse(source)
    module = _Module(tree)
    findings: list[Finding] = []
    reported: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.expr) or not _is_builder(node) or id(node) in reported:
            continue
        if not _SQL.search(_fixed_text(node)):
            continue
        func = module.owner[id(node)]
        bad = [v for v in _interpolated(node) if not module.trusted(v, func)]
        if bad:
            for inner in ast.walk(node):
                reported.add(id(inner))
            findings.append(Finding(path, node.lineno, ast.unparse(node)[:120]))
    return findings


def _python_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(path.rglob("*.py"))
        elif path.suffix == ".py":
            yield path


def scan_paths(paths: Iterable[Path], root: Path) -> list[Finding]:
    """Findings in every Python file under ``paths``."""
    findings: list[Finding] = []
    for file in _python_files(paths):
        findings += scan_source(file.read_text(), str(file.relative_to(root)))
    return findings
