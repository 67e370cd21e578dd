"""Exact first and second derivatives of a parsed constraint or linked mean.

Owns the translation of an expression's checked, rewritten syntax tree
(``linkmix.constraints.Expression``) into a tape: a straight-line program over
parameters, constants and numeric data columns that ``_tape.evaluate`` runs in
compiled forward mode, giving f, ∇f and ∇²f in the parameters the expression reads
from one pass (no differences).  Every part that reads no parameter (a comparison of
a text column with a level, arithmetic on columns) is evaluated once, when the tape
is made, with the expression's own code, and enters as a column or a constant.
``u ** v`` with both sides depending on parameters is taken as exp(v·log u).
"""

from __future__ import annotations

import ast

import numpy as np

from . import _tape

__all__ = ["Tape", "OPCODES"]

#: The instructions of ``_tape.evaluate``, in its numbering.
OPCODES = ("CONST", "PARAM", "COLUMN", "ADD", "SUB", "MUL", "DIV", "POWC", "CPOW", "MOD", "NEG",
           "EXP", "LOG", "LOG2", "LOG10", "LOG1P", "EXPM1", "SQRT", "ABS", "SIN", "COS", "TAN",
           "TANH", "ARCTAN", "EXPIT", "LOGIT", "WHERE", "MINIMUM", "MAXIMUM",
           "EQ", "NE", "LT", "LE", "GT", "GE")
_OP = {name: code for code, name in enumerate(OPCODES)}
_BINARY = {ast.Add: "ADD", ast.Sub: "SUB", ast.Mult: "MUL", ast.Div: "DIV", ast.Mod: "MOD"}
_FUNCTIONS = {"exp": "EXP", "log": "LOG", "log2": "LOG2", "log10": "LOG10", "log1p": "LOG1P",
              "expm1": "EXPM1", "sqrt": "SQRT", "abs": "ABS", "sin": "SIN", "cos": "COS",
              "tan": "TAN", "tanh": "TANH", "arctan": "ARCTAN", "expit": "EXPIT",
              "logit": "LOGIT", "minimum": "MINIMUM", "maximum": "MAXIMUM", "where": "WHERE"}
_COMPARISONS = {"Eq": "EQ", "NotEq": "NE", "Lt": "LT", "LtE": "LE", "Gt": "GT", "GtE": "GE"}


class _Unsupported(Exception):
    """A part of an expression the tape does not take (its derivatives are differenced)."""


class Tape:
    """The tape of one expression over its parameters and data columns.

    Use ``Tape.of``; ``derivatives(values)`` then gives (f, ∇f, ∇²f) over
    ``parameters`` (the expression's ``parameters_used``, in order) at ``values``
    (their values in that order): shapes (r,), (r, d), (r, d, d), r the number of data
    rows where f reads a column, else 1.
    """

    def __init__(self, parameters, n_rows: int, evaluate_constant):
        self.parameters = list(parameters)
        self.n_rows = n_rows
        self._evaluate_constant = evaluate_constant
        self._code: list[tuple[int, int, int, int]] = []
        self._varies: list[bool] = []
        self._consts: list[float] = []
        self._columns: list[np.ndarray] = []

    @classmethod
    def of(cls, body: ast.expr, parameters, evaluate_constant, n_rows: int) -> "Tape | None":
        """The tape of a rewritten expression ``body`` (``Expression``'s, reading
        ``_env[name]``, ``_col[name]``, ``_fn[name](…)`` and ``_cmp(op, a, b)``), or
        None where it holds a part the tape does not take.  ``evaluate_constant(node)``
        evaluates a part that reads no parameter."""
        tape = cls(parameters, n_rows, evaluate_constant)
        try:
            tape._add(body)
        except _Unsupported:
            return None
        tape.code = np.array(tape._code, dtype=np.int32).reshape(-1, 4)
        tape.consts = np.array(tape._consts, dtype=float)
        tape.columns = (np.vstack(tape._columns) if tape._columns
                        else np.zeros((0, n_rows)))
        tape.varies = np.array(tape._varies, dtype=np.uint8)
        return tape

    def derivatives(self, values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _tape.evaluate(self.code, self.consts, self.columns, self.varies,
                              np.ascontiguousarray(values, dtype=float), self.n_rows)

    # -- building ---------------------------------------------------------------
    def _emit(self, op: str, x: int = 0, y: int = 0, z: int = 0, varies: bool = False) -> int:
        self._code.append((_OP[op], x, y, z))
        self._varies.append(varies)
        return len(self._code) - 1

    def _operation(self, op: str, *nodes: int) -> int:
        args = list(nodes) + [0] * (3 - len(nodes))
        return self._emit(op, *args, varies=any(self._varies[k] for k in nodes))

    def _constant(self, value) -> int:
        value = np.asarray(value, dtype=float)
        if value.ndim == 0:
            self._consts.append(float(value))
            return self._emit("CONST", len(self._consts) - 1)
        if value.shape != (self.n_rows,):
            raise _Unsupported
        self._columns.append(np.ascontiguousarray(value))
        return self._emit("COLUMN", len(self._columns) - 1, varies=True)

    def _reads_parameter(self, node) -> bool:
        return any(isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
                   and n.value.id == "_env" for n in ast.walk(node))

    def _add(self, node) -> int:
        if not self._reads_parameter(node):
            try:
                return self._constant(self._evaluate_constant(node))
            except (TypeError, ValueError):
                raise _Unsupported from None
        if isinstance(node, ast.Subscript):  # _env[name]
            return self._emit("PARAM", self.parameters.index(node.slice.value))
        if isinstance(node, ast.UnaryOp):
            operand = self._add(node.operand)
            return self._operation("NEG", operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                return self._power(node)
            left = self._add(node.left)
            right = self._add(node.right)
            return self._operation(_BINARY[type(node.op)], left, right)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "_cmp":
            op = _COMPARISONS[node.args[0].value]
            return self._operation(op, *(self._add(a) for a in node.args[1:]))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript):  # _fn[name]
            name = node.func.slice.value
            args = [self._add(a) for a in node.args]
            arity = 3 if name == "where" else 2 if name in ("minimum", "maximum") else 1
            if len(args) != arity:
                raise _Unsupported
            return self._operation(_FUNCTIONS[name], *args)
        raise _Unsupported

    def _power(self, node) -> int:
        base = self._add(node.left)
        exponent = self._add(node.right)
        base_free = not self._reads_parameter(node.left)
        exponent_free = not self._reads_parameter(node.right)
        if exponent_free:
            return self._operation("POWC", base, exponent)
        if base_free:
            return self._operation("CPOW", base, exponent)
        log_base = self._operation("LOG", base)
        return self._operation("EXP", self._operation("MUL", exponent, log_base))
