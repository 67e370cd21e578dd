"""lme4 formula text → a fixed-effects formula and random-effects term specs.

Owns syntax only; no data is touched here.  Understood:

* ``y ~ fixed + (expr | g)``: a random-effects term, correlated coefficients;
* ``(expr || g)``: independent coefficients; every column of ``expr``'s model
  matrix becomes its own term (so factors split per level, unlike lme4);
* grouping ``a:b`` (the interaction factor) and ``a/b`` (``a`` and ``a:b``).

Also owns what a formula may *say*.  formulaic evaluates every term that is not
a bare column name as Python, so each right-hand side is checked against a
whitelist (``check_terms``) before anything is evaluated: column names, numbers,
arithmetic and comparisons, and calls of ``FORMULA_FUNCTIONS`` only.  No
attribute access (but ``contr.<name>``), subscripts, underscore names, lambdas,
comprehensions or other calls pass, and evaluation sees ``EVALUATION_CONTEXT``,
never the caller's variables.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass

import numpy as np

from .errors import FormulaError

__all__ = ["RandomTermSpec", "FormulaSpec", "parse_formula", "check_terms", "check_name",
           "FORMULA_FUNCTIONS", "EVALUATION_CONTEXT", "plain_message"]

#: Functions a formula term may call: formulaic's transforms and contrasts, and the
#: numpy functions of ``EVALUATION_CONTEXT``.
FORMULA_FUNCTIONS = frozenset({
    "I", "C", "log", "log2", "log10", "log1p", "exp", "expm1", "sqrt", "abs",
    "center", "scale", "standardize", "poly", "bs", "cr", "cs", "cc",
    "Treatment", "Sum", "Helmert", "Diff", "Poly"})
#: Contrasts that may also be named without a call (``C(a, Sum)``), and the members of
#: formulaic's ``contr`` registry a formula may use (``C(a, contr.sum)``).
_CONTRASTS = frozenset({"Treatment", "Sum", "Helmert", "Diff", "Poly"})
_CONTR_MEMBERS = frozenset({"treatment", "sum", "helmert", "diff", "poly", "SAS"})
#: What evaluation may see besides the data and formulaic's own transforms.
EVALUATION_CONTEXT = {"sqrt": np.sqrt, "abs": np.abs, "log1p": np.log1p, "expm1": np.expm1}

_BINARY_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd)
_UNARY_OPS = (ast.USub, ast.UAdd)
_COMPARE_OPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_BACKTICKED = re.compile(r"`([^`]*)`")
_ANSI = re.compile(r"\x1b\[[0-9;]*m|[⧛⧚]")
_PLACEHOLDER = "__column{}__"


def plain_message(message: str) -> str:
    """formulaic's message without its terminal colours, on one line."""
    return " ".join(_ANSI.sub("", message).split())


class _TermChecker:
    """Walks the Python of one formulaic factor; raises ``FormulaError`` at the first
    piece outside the whitelist and collects the data columns the factor reads."""

    def __init__(self, text: str, columns: dict[str, str]):
        self.text = text
        self.quoted = columns     # placeholder → backticked column name
        self.columns: set[str] = set()

    def refuse(self, node, why: str):
        piece = ast.unparse(node)
        for key, name in self.quoted.items():
            piece = piece.replace(key, f"`{name}`")
        raise FormulaError(f"{piece!r} in the term {self.text!r}: {why}")

    def column(self, node: ast.Name) -> None:
        name = node.id
        if name in self.quoted:
            self.columns.add(self.quoted[name])
        elif name.startswith("_"):
            self.refuse(node, "names starting with '_' are not allowed in a formula")
        else:
            self.columns.add(name)

    def check(self, node, *, argument: bool = False) -> None:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and not argument:
                self.refuse(node, "text is allowed only as an argument, e.g. "
                                  "C(a, Treatment('b'))")
            if not (node.value is None or isinstance(node.value, (bool, int, float, str))):
                self.refuse(node, "only numbers, text, True, False and None are allowed")
        elif isinstance(node, ast.Name):
            if argument and node.id in _CONTRASTS:
                return
            if node.id in FORMULA_FUNCTIONS:
                self.refuse(node, "a function must be called, e.g. log(x)")
            self.column(node)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, _BINARY_OPS):
            self.check(node.left)
            self.check(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, _UNARY_OPS):
            self.check(node.operand)
        elif isinstance(node, ast.Compare) and all(isinstance(op, _COMPARE_OPS)
                                                    for op in node.ops):
            for operand in (node.left, *node.comparators):
                self.check(operand, argument=True)  # a column may be compared with text
        elif isinstance(node, (ast.List, ast.Tuple)) and argument:
            for item in node.elts:
                if not isinstance(item, ast.Constant):
                    self.refuse(item, "lists may hold only numbers and text")
                self.check(item, argument=True)
        elif isinstance(node, ast.Attribute):
            if (isinstance(node.value, ast.Name) and node.value.id == "contr"
                    and node.attr in _CONTR_MEMBERS and argument):
                return
            self.refuse(node, "attribute access is not allowed (a column name with a dot goes in "
                              "backticks, `a.b`; write log(x), not np.log(x); contrasts as "
                              f"contr.<{'|'.join(sorted(_CONTR_MEMBERS))}>)")
        elif isinstance(node, ast.Call):
            self.call(node)
        else:
            self.refuse(node, f"{type(node).__name__.lower()} expressions are not allowed "
                              f"(only column names, numbers, arithmetic, comparisons and "
                              f"the functions {', '.join(sorted(FORMULA_FUNCTIONS))})")

    def call(self, node: ast.Call) -> None:
        func = node.func
        allowed = (isinstance(func, ast.Name) and func.id in FORMULA_FUNCTIONS) or (
            isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id == "contr" and func.attr in _CONTR_MEMBERS)
        if not allowed:
            self.refuse(func, f"calls are limited to {', '.join(sorted(FORMULA_FUNCTIONS))} "
                              f"and contr.<name>")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                self.refuse(arg, "starred arguments are not allowed")
            self.check(arg, argument=True)
        for keyword in node.keywords:
            if keyword.arg is None or keyword.arg.startswith("_"):
                self.refuse(node, "keyword arguments must be plain names not starting with '_'")
            self.check(keyword.value, argument=True)


@functools.lru_cache(maxsize=512)
def _checked(rhs: str) -> tuple[frozenset[str], str | None]:
    """(columns read, None) for an acceptable right-hand side, or (∅, why not)."""
    from formulaic import Formula  # here, not at import: formulaic costs 0.2 s to import
    from formulaic.errors import FormulaicError

    try:
        parsed = Formula(rhs)
        factors = [factor for term in parsed for factor in term.factors]
    except FormulaicError as exc:
        return frozenset(), f"cannot parse it: {plain_message(str(exc))}"
    except Exception as exc:  # formulaic's parser on text it was never meant to see
        return frozenset(), f"cannot parse it ({type(exc).__name__}: {plain_message(str(exc))})"
    columns: set[str] = set()
    for factor in factors:
        method = factor.eval_method.name
        if method == "LITERAL":
            continue
        if method == "LOOKUP":  # a column looked up by name, never evaluated
            if "__" in str(factor.expr):
                return frozenset(), f"{str(factor.expr)!r}: names with '__' are not allowed"
            columns.add(str(factor.expr))
            continue
        text = str(factor.expr)
        quoted: dict[str, str] = {}

        def placeholder(match):
            key = _PLACEHOLDER.format(len(quoted))
            quoted[key] = match.group(1)
            return key

        try:
            tree = ast.parse(_BACKTICKED.sub(placeholder, text), mode="eval").body
            checker = _TermChecker(text, quoted)
            checker.check(tree)
        except SyntaxError as exc:
            return frozenset(), f"cannot parse the term {text!r}: {exc.msg}"
        except FormulaError as exc:
            return frozenset(), str(exc)
        columns |= checker.columns
    return frozenset(columns), None


def check_terms(rhs: str, where: str) -> frozenset[str]:
    """Check a formula right-hand side against the whitelist; return the columns it reads.

    Parameters
    ----------
    rhs : str
        Fixed-effects part or random-effects expression, e.g. ``"1 + log(x) + C(a)"``.
    where : str
        How messages refer to it (``"the fixed-effects part"``).

    Raises
    ------
    FormulaError
        Naming the first piece that is not allowed; nothing has been evaluated.
    """
    if not isinstance(rhs, str) or not rhs.strip():
        raise FormulaError(f"{where} is empty")
    for bad, what in (("~", "'~'"), ("|", "'|'")):
        if bad in rhs:
            raise FormulaError(f"{where} {rhs!r} may not contain {what}")
    columns, why = _checked(rhs)
    if why is not None:
        raise FormulaError(f"{where} {rhs!r}: {why}")
    return columns


_NAME = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")


def check_name(text: str, what: str) -> str:
    """A name that is only looked up, never evaluated (a response, a grouping factor, an
    argument of a nonlinear model): letters, digits, '_' and '.', or anything in backticks."""
    name = text.strip()
    if len(name) > 2 and name[0] == name[-1] == "`" and "`" not in name[1:-1]:
        return name[1:-1]
    if not _NAME.fullmatch(name) or name.startswith("__"):
        raise FormulaError(f"{what} {name!r} must be a name (letters, digits, '_', '.'; put "
                           f"other names in backticks)")
    return name


@dataclass(frozen=True)
class RandomTermSpec:
    """One random-effects term ``(expr | group)`` before it meets data.

    Attributes
    ----------
    expr : str
        Right-hand side of the term's model matrix, e.g. ``"1 + Days"``.
    group : tuple of str
        Columns whose interaction is the grouping factor (``("a", "b")`` for ``a:b``).
    independent : bool
        True for ``||``: each model-matrix column gets its own variance and no
        correlation.
    """

    expr: str
    group: tuple[str, ...]
    independent: bool = False

    @property
    def group_name(self) -> str:
        return ":".join(self.group)


@dataclass(frozen=True)
class FormulaSpec:
    """A parsed mixed-model formula."""

    text: str
    response: str
    fixed: str
    random: tuple[RandomTermSpec, ...]

    @property
    def fixed_formula(self) -> str:
        return f"{self.response} ~ {self.fixed}"


def split_top_level(text: str, sep: str) -> list[str]:
    """Split ``text`` at occurrences of ``sep`` outside parentheses and backticks."""
    parts, depth, start, i, quoted = [], 0, 0, 0, False
    while i < len(text):
        ch = text[i]
        if ch == "`":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced ')' at position {i} in {text!r}")
        elif not quoted and depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    if depth != 0:
        raise FormulaError(f"unbalanced '(' in {text!r}")
    if quoted:
        raise FormulaError(f"unclosed backtick in {text!r}")
    parts.append(text[start:])
    return parts


def strip_outer_parens(chunk: str) -> str | None:
    """The inside of ``( … )`` when the parentheses enclose the whole chunk."""
    chunk = chunk.strip()
    if not (chunk.startswith("(") and chunk.endswith(")")):
        return None
    depth = 0
    for i, ch in enumerate(chunk):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(chunk) - 1:
            return None
    return chunk[1:-1]


def _parse_group(text: str, whole: str) -> list[tuple[str, ...]]:
    """Grouping syntax: ``g``, ``a:b``, ``a/b/c`` → list of interaction tuples."""
    text = text.strip()
    if not text:
        raise FormulaError(f"random-effects term in {whole!r} has no grouping factor after '|'")
    for bad in "+*()|~-":
        if bad in text:
            raise FormulaError(
                f"grouping factor {text!r} in {whole!r}: only names, ':' (interaction) "
                f"and '/' (nesting) are allowed")
    nested = [seg.strip() for seg in text.split("/")]
    groups, prefix = [], ()
    for seg in nested:
        if not all(part.strip() for part in seg.split(":")):
            raise FormulaError(f"empty name in grouping factor {text!r} of {whole!r}")
        names = tuple(check_name(part, f"grouping factor in {whole!r}")
                      for part in seg.split(":"))
        prefix = prefix + names
        groups.append(prefix)
    return groups


def parse_formula(text: str) -> FormulaSpec:
    """Parse an lme4-style mixed-model formula (``FormulaSpec`` is immutable: a text is
    parsed once per process, as batch fits and repeated fits reuse it).

    Parameters
    ----------
    text : str
        For example ``"Reaction ~ 1 + Days + (1 + Days | Subject)"``.

    Returns
    -------
    FormulaSpec
        Response name, fixed-effects right-hand side (``"1"`` if none is given)
        and the random-effects terms in the order written.
    """
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula must be a non-empty string such as 'y ~ x + (1 | g)'")
    return _parse_formula(text)


@functools.lru_cache(maxsize=512)
def _parse_formula(text: str) -> FormulaSpec:
    sides = split_top_level(text, "~")
    if len(sides) != 2:
        raise FormulaError(f"the formula {text!r} must have exactly one '~' with the response on its left")
    if not sides[0].strip():
        raise FormulaError(f"the formula {text!r} has no response on the left of '~'")
    response, rhs = check_name(sides[0], "the response"), sides[1].strip()
    if not rhs:
        raise FormulaError(f"the formula {text!r} has nothing on the right of '~'")

    fixed_parts: list[str] = []
    random: list[RandomTermSpec] = []
    for chunk in split_top_level(rhs, "+"):
        if not chunk.strip():
            raise FormulaError(f"empty term (a stray '+') in {text!r}")
        inner = strip_outer_parens(chunk)
        if inner is not None and len(split_top_level(inner, "|")) > 1:
            double = split_top_level(inner, "||")
            if len(double) == 2:
                lhs, grp, independent = double[0], double[1], True
            else:
                single = split_top_level(inner, "|")
                if len(single) != 2:
                    raise FormulaError(f"random-effects term {chunk.strip()!r} must read '(expr | group)'")
                lhs, grp, independent = single[0], single[1], False
            lhs = lhs.strip()
            if not lhs:
                raise FormulaError(f"random-effects term {chunk.strip()!r} has nothing before '|'")
            for group in _parse_group(grp, text):
                random.append(RandomTermSpec(lhs, group, independent))
        elif "|" in chunk:
            raise FormulaError(
                f"'|' in {chunk.strip()!r} outside a parenthesised random-effects term "
                f"(write '(expr | group)')")
        else:
            fixed_parts.append(chunk.strip())
    if not random:
        raise FormulaError(
            f"the formula {text!r} has no random-effects term such as '(1 | group)'; "
            f"a mixed model needs at least one")
    fixed = " + ".join(fixed_parts) if fixed_parts else "1"
    check_terms(fixed, "the fixed-effects part")
    for term in random:
        check_terms(term.expr, f"the random-effects term ({term.expr} | {term.group_name})")
    return FormulaSpec(text=text, response=response, fixed=fixed, random=tuple(random))
