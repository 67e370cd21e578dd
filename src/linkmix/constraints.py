"""User constraints and linked means: parsing, checking and evaluating them.

Owns the small, safe expression language of constraint and mean strings (no
``eval``: Python's ``ast`` parses, a whitelist of nodes is compiled to closures)
and the wrapping of user callables so that every failure names its source.

Expressions use parameter names (``linkmix.parameters``; backticks around names
that are not identifiers), numbers, ``+ - * / ** %``, unary minus, comparisons
(``==``, ``<``, … giving 1.0/0.0, elementwise on data columns), parentheses and
the functions in ``FUNCTIONS``.  A mean expression may also use data columns.
A constraint string is one equation ``lhs == rhs`` or inequality ``lhs >= rhs``
/ ``lhs <= rhs``.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.special

from .errors import LinkmixError
from .tape import Tape

__all__ = ["ConstraintError", "Expression", "Constraint", "MeanTerm", "make_constraint",
           "FUNCTIONS"]


class ConstraintError(LinkmixError):
    """A constraint or linked mean is malformed, names an unknown parameter, or fails."""


FUNCTIONS = {
    "exp": np.exp, "log": np.log, "log2": np.log2, "log10": np.log10, "log1p": np.log1p,
    "expm1": np.expm1, "sqrt": np.sqrt, "abs": np.abs, "sin": np.sin, "cos": np.cos,
    "tan": np.tan, "tanh": np.tanh, "arctan": np.arctan, "expit": scipy.special.expit,
    "logit": scipy.special.logit, "minimum": np.minimum, "maximum": np.maximum,
    "where": np.where,
}
CONSTANTS = {"pi": math.pi, "e": math.e}

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow, ast.Mod: operator.mod}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
            ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_BACKTICK = re.compile(r"`([^`]*)`")


def _as_text(value):
    """A number as a factor level would spell it (2.0 → "2")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _compare(op, left, right):
    """Elementwise comparison; text columns compare with numbers by their spelling."""
    def textual(x):
        return isinstance(x, np.ndarray) and x.dtype.kind in "OUS" or isinstance(x, str)
    if textual(left) or textual(right):
        left = np.asarray(left).astype(str) if textual(left) else _as_text(left)
        right = np.asarray(right).astype(str) if textual(right) else _as_text(right)
    return np.asarray(op(left, right), dtype=float)


class Expression:
    """A parsed arithmetic expression over named parameters (and data columns).

    Parameters
    ----------
    text : str
        The expression; names that are not identifiers go in backticks.
    parameters : sequence of str
        Known parameter names.
    columns : mapping of str to array, optional
        Data columns the expression may use (linked means); parameters win on a clash.
    what : str
        How error messages refer to the expression.

    Attributes
    ----------
    parameters_used : list of str
        The parameters the expression reads.
    """

    def __init__(self, text: str, parameters, columns: Mapping | None = None,
                 what: str = "expression", equation: bool = False):
        if not isinstance(text, str) or not text.strip():
            raise ConstraintError(f"{what} must be a non-empty string")
        self.text = text
        self.what = what
        self._params = frozenset(parameters)
        self._columns = dict(columns or {})
        key = (text, self._params, frozenset(self._columns), what, equation)
        if key not in _COMPILED:
            _COMPILED[key] = self._build(equation)
        code, self.parameters_used, self.kind, self._body = _COMPILED[key]
        self._scope = scope = {"__builtins__": {}, "_fn": FUNCTIONS, "_col": self._columns,
                               "_cmp": _compare_by_name}
        self._fn = lambda env: eval(code, scope, {"_env": env})
        self._tape = None

    def derivatives(self, values: Mapping):
        """(f, ∂f/∂p, ∂²f/∂p∂p') at ``values`` (name → value) in the parameters p the
        expression reads (``parameters_used``, in that order), exactly, from its
        compiled tape (``linkmix.tape``), with shapes (r,), (r, d), (r, d, d): r data
        rows where f reads a column, else 1.  None where the tape does not take the
        expression (its derivatives are then differenced)."""
        if self._tape is None:
            rows = len(next(iter(self._columns.values()))) if self._columns else 1
            self._tape = Tape.of(self._body, self.parameters_used, self._constant, rows) \
                or False
        if self._tape is False:
            return None
        with np.errstate(all="ignore"):
            return self._tape.derivatives([values[name] for name in self.parameters_used])

    def _constant(self, node):
        """The value of a part of the expression that reads no parameter."""
        code = compile(ast.fix_missing_locations(ast.Expression(node)), "<linkmix>", "eval")
        with np.errstate(all="ignore"):
            return eval(code, self._scope, {"_env": {}})

    def _build(self, equation: bool):
        """Parse, check and compile; for an equation, compile its residual
        (``lhs - rhs``, or ``rhs - lhs`` for ``<=``) and note its kind."""
        text, what = self.text, self.what
        quoted: dict[str, str] = {}

        def placeholder(match):
            key = f"__q{len(quoted)}__"
            quoted[key] = match.group(1)
            return key

        source = _BACKTICK.sub(placeholder, text)
        if "`" in source:
            raise ConstraintError(f"unclosed backtick in {what} {text!r}")
        try:
            node = ast.parse(source.strip(), mode="eval").body
        except SyntaxError as exc:
            hint = ""
            if "=>" in source or "=<" in source:
                hint = "; an inequality is written with '>=' or '<='"
            elif re.search(r"(?<![=<>!])=(?!=)", source):
                hint = ("; an equation is written with '==' (e.g. 'a == b'), an inequality "
                        "with '>=' or '<='")
            raise ConstraintError(f"cannot parse {what} {text!r}: {exc.msg}{hint}") from None
        self._quoted = quoted
        self.parameters_used = []
        kind = None
        if equation:
            if not (isinstance(node, ast.Compare) and len(node.ops) == 1
                    and type(node.ops[0]) in (ast.Eq, ast.GtE, ast.LtE, ast.Gt, ast.Lt)):
                raise ConstraintError(f"{what} {text!r} must be an equation 'lhs == rhs' or an "
                                      f"inequality 'lhs >= rhs' / 'lhs <= rhs'")
            op, left, right = type(node.ops[0]), node.left, node.comparators[0]
            kind = "eq" if op is ast.Eq else "ineq"
            if op in (ast.LtE, ast.Lt):
                left, right = right, left
            body = ast.BinOp(self._rewrite(left), ast.Sub(), self._rewrite(right))
        else:
            body = self._rewrite(node)
        tree = ast.fix_missing_locations(ast.Expression(body))
        code = compile(tree, f"<linkmix {what}>", "eval")
        return code, list(self.parameters_used), kind, body

    # -- compilation ---------------------------------------------------------
    # The validated tree is rewritten into one Python expression over three
    # locals (``_env`` the parameters, ``_col`` data columns, ``_fn`` functions)
    # and compiled: only whitelisted nodes reach ``compile``, so nothing the user
    # writes can name a builtin, an attribute or a module.
    def _name(self, node: ast.Name) -> ast.expr:
        raw = node.id
        name = self._quoted.get(raw, raw)
        if name in self._params:
            if name not in self.parameters_used:
                self.parameters_used.append(name)
            return _subscript("_env", name)
        if name in self._columns:
            return _subscript("_col", name)
        if name in CONSTANTS and raw not in self._quoted:
            return ast.Constant(CONSTANTS[name])
        known = sorted(self._params)
        hint = " (names that are not identifiers must be in backticks)" if raw == name else ""
        cols = f"; data columns: {sorted(self._columns)}" if self._columns else ""
        raise ConstraintError(f"{self.what} {self.text!r} names unknown parameter {name!r}{hint}; "
                              f"known parameters: {known}{cols}")

    def _is_column(self, node) -> bool:
        return isinstance(node, ast.Name) and \
            self._quoted.get(node.id, node.id) in self._columns and \
            self._quoted.get(node.id, node.id) not in self._params

    def _rewrite(self, node, text_allowed: bool = False) -> ast.expr:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if not text_allowed:
                raise ConstraintError(
                    f"{self.what} {self.text!r}: {node.value!r} is text; the expression "
                    f"language has numbers only (a mean may compare a data column with a "
                    f"level, e.g. treatment == 'B')")
            return ast.Constant(node.value)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
                and not isinstance(node.value, bool):
            return ast.Constant(node.value)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return ast.BinOp(self._rewrite(node.left), type(node.op)(), self._rewrite(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return ast.UnaryOp(type(node.op)(), self._rewrite(node.operand))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            op_name = type(node.ops[0]).__name__
            # text only opposite a data column (a mean's ``treatment == 'B'``)
            left, right = node.left, node.comparators[0]
            return _call("_cmp", [ast.Constant(op_name),
                                  self._rewrite(left, text_allowed=self._is_column(right)),
                                  self._rewrite(right, text_allowed=self._is_column(left))])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            fname = node.func.id
            if fname not in FUNCTIONS:
                raise ConstraintError(f"{self.what} {self.text!r} calls unknown function "
                                      f"{fname!r}; available: {sorted(FUNCTIONS)}")
            return ast.Call(_subscript("_fn", fname), [self._rewrite(a) for a in node.args], [])
        spelled = ast.unparse(node).replace(" ", "")
        if spelled in self._params or isinstance(node, ast.Subscript):
            known = "" if spelled in self._params else \
                f" (and it is not a parameter; known parameters: {sorted(self._params)})"
            raise ConstraintError(f"{self.what} {self.text!r}: write the parameter {spelled!r} "
                                  f"in backticks, `{spelled}`{known}")
        raise ConstraintError(f"{self.what} {self.text!r}: '{ast.unparse(node)}' is not allowed "
                              f"(only numbers, names, + - * / ** %, comparisons and "
                              f"functions {sorted(FUNCTIONS)})")

    def __call__(self, env: Mapping):
        return self._fn(env)


def _subscript(container: str, key: str) -> ast.Subscript:
    return ast.Subscript(ast.Name(container, ast.Load()), ast.Constant(key), ast.Load())


def _call(fname: str, args) -> ast.Call:
    return ast.Call(ast.Name(fname, ast.Load()), args, [])


def _compare_by_name(op_name: str, left, right):
    return _compare(_COMPARE_BY_NAME[op_name], left, right)


_COMPARE_BY_NAME = {op.__name__: fn for op, fn in _COMPARE.items()}
#: compiled expressions by (text, parameter names, column names, role, equation?):
#: batch fits compile each constraint once
_COMPILED: dict = {}


@dataclass
class Constraint:
    """One constraint ``fun(params) == 0`` (``kind="eq"``) or ``>= 0`` (``kind="ineq"``).

    ``fun`` receives a read-only mapping from parameter names to values.
    """

    fun: object
    kind: str = "eq"
    label: str = ""
    parameters_used: list | None = None  # None: any (a callable)

    def __post_init__(self):
        if self.kind not in ("eq", "ineq"):
            raise ConstraintError(f"constraint kind must be 'eq' or 'ineq', not {self.kind!r}")
        if not callable(self.fun):
            raise ConstraintError(f"a constraint must be a string or a callable, "
                                  f"not {type(self.fun).__name__}")
        if not self.label:
            self.label = getattr(self.fun, "__name__", "constraint")


class Params(Mapping):
    """Read-only view of named parameter values; unknown names raise a clear error."""

    def __init__(self, names, index, values, owner: str):
        self._names, self._index, self._values, self._owner = names, index, values, owner

    def __getitem__(self, name):
        try:
            return np.float64(self._values[self._index[name]])  # overflows to inf, never raises
        except KeyError:
            raise ConstraintError(f"{self._owner} asked for unknown parameter {name!r}; known "
                                  f"parameters: {self._names}") from None

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


def _string_constraint(text: str, parameters) -> Constraint:
    expr = Expression(text, parameters, what="constraint", equation=True)
    return Constraint(expr, expr.kind, label=text, parameters_used=list(expr.parameters_used))


def make_constraint(spec, parameters) -> Constraint:
    """A ``Constraint`` from a string, a callable (equality), a ``Constraint``, or a
    scipy-style dict ``{"type": "eq"|"ineq", "fun": callable}``."""
    if isinstance(spec, Constraint):
        return spec
    if isinstance(spec, str):
        return _string_constraint(spec, parameters)
    if isinstance(spec, Mapping):
        if "fun" not in spec:
            raise ConstraintError(f"a constraint dict needs a 'fun' entry: {spec!r}")
        return Constraint(spec["fun"], spec.get("type", "eq"), spec.get("label", ""))
    if callable(spec):
        return Constraint(spec, "eq")
    raise ConstraintError(f"a constraint must be a string, a callable or a dict, "
                          f"not {type(spec).__name__}")


class MeanTerm:
    """A linked mean ``f(Π, data)`` added to Xβ: a string or ``callable(params, data)``.

    Parameters
    ----------
    spec : str or callable
    parameters : sequence of str
    data : pandas.DataFrame
        The rows used in the fit, in order.
    """

    def __init__(self, spec, parameters, data):
        self.n = len(data)
        self.data = data
        if isinstance(spec, str):
            columns = {c: data[c].to_numpy() for c in data.columns}
            self._expr = Expression(spec, parameters, columns, what="mean")
            self.label = spec
            self._fun = lambda params: self._expr(params)
            self.parameters_used = list(self._expr.parameters_used)
        elif callable(spec):
            self.parameters_used = None     # any of them
            self.label = getattr(spec, "__name__", "mean")
            self._fun = lambda params: spec(params, data)
        else:
            raise ConstraintError(f"mean must be a string or a callable(params, data), "
                                  f"not {type(spec).__name__}")

    def derivatives(self, values: Mapping):
        """(f, ∂f/∂p, ∂²f/∂p∂p') of a mean written as a string, exactly, in the parameters
        it reads (``parameters_used``), shapes (n,), (n, d), (n, d, d); None for a
        callable (its derivatives are differenced)."""
        if self.parameters_used is None:
            return None
        exact = self._expr.derivatives(values)
        if exact is None:
            return None
        value, grad, hess = exact
        d = len(self.parameters_used)
        return (np.broadcast_to(value, (self.n,)), np.broadcast_to(grad, (self.n, d)),
                np.broadcast_to(hess, (self.n, d, d)))

    def __call__(self, params: Mapping) -> np.ndarray:
        try:
            value = self._fun(params)
        except ConstraintError:
            raise
        except Exception as exc:
            raise ConstraintError(f"the mean {self.label!r} raised "
                                  f"{type(exc).__name__}: {exc}") from None
        value = np.asarray(value, dtype=float)
        if value.ndim == 0:
            value = np.full(self.n, float(value))
        if value.shape != (self.n,):
            raise ConstraintError(f"the mean {self.label!r} returned shape {value.shape}; "
                                  f"expected ({self.n},) or a scalar")
        return value
