"""lme4 formula text → a fixed-effects formula and random-effects term specs.

Owns syntax only; no data is touched here.  Understood:

* ``y ~ fixed + (expr | g)``: a random-effects term, correlated coefficients;
* ``(expr || g)``: independent coefficients; every column of ``expr``'s model
  matrix becomes its own term (so factors split per level, unlike lme4);
* grouping ``a:b`` (the interaction factor) and ``a/b`` (``a`` and ``a:b``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FormulaError

__all__ = ["RandomTermSpec", "FormulaSpec", "parse_formula"]


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


def _split_top_level(text: str, sep: str) -> list[str]:
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


def _strip_outer_parens(chunk: str) -> str | None:
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
        names = tuple(name.strip().strip("`") for name in seg.split(":"))
        if not all(names):
            raise FormulaError(f"empty name in grouping factor {text!r} of {whole!r}")
        prefix = prefix + names
        groups.append(prefix)
    return groups


def parse_formula(text: str) -> FormulaSpec:
    """Parse an lme4-style mixed-model formula.

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
    sides = _split_top_level(text, "~")
    if len(sides) != 2:
        raise FormulaError(f"the formula {text!r} must have exactly one '~' with the response on its left")
    response, rhs = sides[0].strip().strip("`"), sides[1].strip()
    if not response:
        raise FormulaError(f"the formula {text!r} has no response on the left of '~'")
    if not rhs:
        raise FormulaError(f"the formula {text!r} has nothing on the right of '~'")

    fixed_parts: list[str] = []
    random: list[RandomTermSpec] = []
    for chunk in _split_top_level(rhs, "+"):
        if not chunk.strip():
            raise FormulaError(f"empty term (a stray '+') in {text!r}")
        inner = _strip_outer_parens(chunk)
        if inner is not None and len(_split_top_level(inner, "|")) > 1:
            double = _split_top_level(inner, "||")
            if len(double) == 2:
                lhs, grp, independent = double[0], double[1], True
            else:
                single = _split_top_level(inner, "|")
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
    return FormulaSpec(text=text, response=response, fixed=fixed, random=tuple(random))
