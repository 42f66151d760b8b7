"""What a cell reads, binds and deletes — pure AST analysis, no IPython, no I/O.

The magic hands us the cell *after* IPython's input transforms, so ``!cmd`` and
``%magic`` lines are already plain calls (``get_ipython().system(...)``) and
parse as Python. The answers decide what leaves the machine (the inputs) and
what comes back (the outputs), so the analysis errs on the side of what Python
itself would look up: a name counts as *read* when some load of it can reach
the module namespace, in any nested scope, before the cell has bound it on
every path. Builtin names are reported too: the caller sends only the names
that exist in the namespace, which is exactly the shadowed builtins.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["CellAnalysis", "analyze"]


@dataclass(frozen=True)
class CellAnalysis:
    """The namespace effects of one cell, in the order names first appear."""

    reads: tuple[str, ...]
    """Global names the cell may read before binding them (builtins included)."""
    binds: tuple[str, ...]
    """Names the cell binds at module level (including ``global`` in functions); not those of
    ``from x import *``, known only when it runs (the runner sees every name the cell bound)."""
    deletes: tuple[str, ...]
    """Names the cell may ``del`` at module level (even if it binds them again later:
    the rebinding may not run)."""
    ends_with_expression: bool
    """Whether the last statement is an expression whose value a cell would show."""


def analyze(source: str) -> CellAnalysis:
    """Analyse transformed cell source.

    Raises ``SyntaxError`` as compiling the cell would.
    """
    tree = ast.parse(source, mode="exec")
    visitor = _ModuleScope()
    for stmt in tree.body:
        visitor.visit(stmt)
    reads = tuple(dict.fromkeys(visitor.reads))
    return CellAnalysis(
        reads=reads,
        binds=tuple(dict.fromkeys(visitor.binds)),
        deletes=tuple(dict.fromkeys(visitor.deletes)),
        ends_with_expression=bool(tree.body) and isinstance(tree.body[-1], ast.Expr),
    )


def _target_names(node: ast.AST) -> list[str]:
    """Names bound by an assignment target (tuples, starred, but not attributes)."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return [n for elt in node.elts for n in _target_names(elt)]
    if isinstance(node, ast.Starred):
        return _target_names(node.value)
    return []


class _ModuleScope(ast.NodeVisitor):
    """Walks module-level statements in order, tracking what is bound so far.

    A read of a name already bound by an earlier top-level statement is not an
    input (``x = 1; print(x)``). Control flow is treated conservatively: a name
    bound inside an ``if`` branch still counts as bound for later statements
    only if it was also bound before — otherwise a read after it is an input
    (it *may* come from the namespace).
    """

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.binds: list[str] = []
        self.deletes: list[str] = []
        self._bound: set[str] = set()  # bound on every path so far

    # -- helpers -------------------------------------------------------
    def _read(self, name: str) -> None:
        if name not in self._bound:
            self.reads.append(name)

    def _bind(self, name: str, *, certain: bool = True) -> None:
        self.binds.append(name)
        if certain:
            self._bound.add(name)

    def _nested(self, node: ast.AST, params: set[str] | None = None) -> None:
        """Analyse a function/lambda/comprehension/class body as its own scope."""
        inner = _InnerScope(params or set())
        inner.run(node)
        for name in inner.free_reads:
            self._read(name)
        for name in inner.global_binds:
            self._bind(name, certain=False)

    def _uncertain_block(self, stmts: list[ast.stmt]) -> None:
        """Statements that may not run (branches, loop bodies, handlers)."""
        mark = self._mark()
        for stmt in stmts:
            self.visit(stmt)
        self._restore(mark)

    def _mark(self) -> tuple[set[str], int]:
        return set(self._bound), len(self.deletes)

    def _restore(self, mark: tuple[set[str], int]) -> None:
        """Forget bindings made on a path that may not run — but not deletions: a name
        deleted on any path may be unbound afterwards, so a later read is an input."""
        saved, deletes_before = mark
        self._bound = saved - set(self.deletes[deletes_before:])

    # -- statements ----------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._read(node.id)
        elif isinstance(node.ctx, ast.Store):
            self._bind(node.id)
        elif isinstance(node.ctx, ast.Del):
            self.deletes.append(node.id)
            self._bound.discard(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self._read(node.target.id)
            self._bind(node.target.id)
        else:
            self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.annotation)
        if isinstance(node.target, ast.Name):
            if node.value is not None:
                self._bind(node.target.id)
        else:
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._bind(node.target.id)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._bind(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":  # what `*` binds is known only when it runs
                self._bind(alias.asname or alias.name)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        args = node.args
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.visit(default)
        if not isinstance(node, ast.Lambda):
            for deco in node.decorator_list:
                self.visit(deco)
            for arg in _all_args(args):
                if arg.annotation is not None:
                    self.visit(arg.annotation)
            if node.returns is not None:
                self.visit(node.returns)
        self._nested(node, {a.arg for a in _all_args(args)})
        if not isinstance(node, ast.Lambda):
            self._bind(node.name)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(expr)
        self._nested(node)
        self._bind(node.name)

    def _visit_comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        # The first iterable is evaluated in the enclosing scope; the rest is its own.
        self.visit(node.generators[0].iter)
        self._nested(node)

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _visit_comprehension

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        mark = self._mark()
        self.visit(node.target)
        for stmt in node.body:
            self.visit(stmt)
        self._restore(mark)
        self._uncertain_block(node.orelse)

    visit_AsyncFor = visit_For

    def visit_While(self, node: ast.While) -> None:
        self.visit(node.test)
        self._uncertain_block(node.body)
        self._uncertain_block(node.orelse)

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        self._uncertain_block(node.body)
        self._uncertain_block(node.orelse)

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.visit(item.optional_vars)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncWith = visit_With

    def visit_Try(self, node: ast.Try) -> None:
        self._uncertain_block(node.body)
        for handler in node.handlers:
            if handler.type is not None:
                self.visit(handler.type)
            mark = self._mark()
            if handler.name:
                self._bind(handler.name)
            for stmt in handler.body:
                self.visit(stmt)
            self._restore(mark)
        self._uncertain_block(node.orelse)
        for stmt in node.finalbody:
            self.visit(stmt)

    visit_TryStar = visit_Try

    def visit_Match(self, node: ast.Match) -> None:
        self.visit(node.subject)
        for case in node.cases:
            mark = self._mark()
            self.visit(case.pattern)
            if case.guard is not None:
                self.visit(case.guard)
            for stmt in case.body:
                self.visit(stmt)
            self._restore(mark)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name is not None:
            self._bind(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name is not None:
            self._bind(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest is not None:
            self._bind(node.rest)

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        pass  # at module level `global x` changes nothing

    visit_Nonlocal = visit_Global


def _all_args(args: ast.arguments) -> list[ast.arg]:
    extra = [a for a in (args.vararg, args.kwarg) if a is not None]
    return [*args.posonlyargs, *args.args, *args.kwonlyargs, *extra]


class _InnerScope(ast.NodeVisitor):
    """A nested scope: which names resolve to module globals, which it declares ``global`` and binds.

    Python decides locality per scope from *all* its bindings, so we collect
    bindings first, then treat every load of a non-local name as a global read.
    Nested scopes inside are folded in (a closure's free names that are not
    bound by an enclosing function are globals too).
    """

    def __init__(self, params: set[str]) -> None:
        self.params = params
        self.free_reads: list[str] = []
        self.global_binds: list[str] = []

    def run(self, node: ast.AST) -> None:
        body = _scope_body(node)
        local, declared_global = _scope_bindings(body, self.params)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            first_iter = node.generators[0].iter
        else:
            first_iter = None
        for child in body:
            for sub in _walk_scope(child, skip=first_iter):
                if isinstance(sub, ast.Name):
                    if isinstance(sub.ctx, ast.Load) and (sub.id not in local or sub.id in declared_global):
                        self.free_reads.append(sub.id)
                    elif isinstance(sub.ctx, (ast.Store, ast.Del)) and sub.id in declared_global:
                        self.global_binds.append(sub.id)
                elif isinstance(sub, ast.AugAssign) and isinstance(sub.target, ast.Name) \
                        and sub.target.id in declared_global:
                    self.free_reads.append(sub.target.id)  # `global x; x += 1` reads x first
                elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    if sub.name in declared_global:
                        self.global_binds.append(sub.name)
                elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                    for alias in sub.names:
                        bound = alias.asname or alias.name.split(".")[0]
                        if bound in declared_global:
                            self.global_binds.append(bound)
                if _opens_scope(sub) and sub is not node:
                    inner = _InnerScope({a.arg for a in _all_args(sub.args)} if hasattr(sub, "args") else set())
                    inner.run(sub)
                    # A class body is not an enclosing scope for the functions inside it.
                    enclosing = set() if isinstance(node, ast.ClassDef) else local - declared_global
                    self.free_reads.extend(n for n in inner.free_reads if n not in enclosing)
                    self.global_binds.extend(inner.global_binds)


def _opens_scope(node: ast.AST) -> bool:
    return isinstance(
        node,
        (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
         ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp),
    )


def _scope_body(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Lambda):
        return [node.body]
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
        return [*node.generators, node.elt]
    if isinstance(node, ast.DictComp):
        return [*node.generators, node.key, node.value]
    return list(node.body)  # type: ignore[attr-defined]


def _walk_scope(node: ast.AST, skip: ast.AST | None = None) -> Iterator[ast.AST]:
    """Yield nodes of this scope; a nested scope is yielded itself but not entered,
    except for the parts of it evaluated in *this* scope (defaults, decorators,
    bases, a comprehension's first iterable)."""
    if node is skip:
        return
    yield node
    if _opens_scope(node):
        outer_parts: list[ast.AST] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            outer_parts += [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
            if not isinstance(node, ast.Lambda):
                outer_parts += node.decorator_list
        elif isinstance(node, ast.ClassDef):
            outer_parts += [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]
        else:
            outer_parts.append(node.generators[0].iter)  # type: ignore[attr-defined]
        for part in outer_parts:
            yield from _walk_scope(part)
        return
    for child in ast.iter_child_nodes(node):
        yield from _walk_scope(child)


def _scope_bindings(body: list[ast.AST], params: set[str]) -> tuple[set[str], set[str]]:
    """(names local to this scope, names declared ``global`` in it)."""
    local = set(params)
    declared_global: set[str] = set()
    for child in body:
        for sub in _walk_scope(child):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                local.add(sub.id)
            elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                local.add(sub.name)
            elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                local.update(a.asname or a.name.split(".")[0] for a in sub.names)
            elif isinstance(sub, ast.ExceptHandler) and sub.name:
                local.add(sub.name)
            elif isinstance(sub, ast.Global):
                declared_global.update(sub.names)
            elif isinstance(sub, ast.arg):
                local.add(sub.arg)
            elif isinstance(sub, (ast.MatchAs, ast.MatchStar)) and sub.name:
                local.add(sub.name)
            elif isinstance(sub, ast.MatchMapping) and sub.rest:
                local.add(sub.rest)
    return local, declared_global
