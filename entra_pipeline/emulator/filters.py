"""A `$filter` parser for the OData subset Graph's directory supports and the pipeline sends.

`parse_filter` turns the text into a predicate over Graph objects, noting whether the expression
needs Graph's "advanced query" mode (ConsistencyLevel: eventual + $count=true) and which
top-level properties it reads (permission and premium checks depend on them).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from entra_pipeline.emulator.errors import GraphError, bad_request, unsupported_query

Predicate = Callable[[dict[str, Any]], bool]
Getter = Callable[[Any], Any]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
    | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<name>\$?[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[()/,:])
    )""",
    re.VERBOSE,
)

_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_NEVER = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class _Token:
    kind: str  # string | datetime | guid | number | name | punct | end
    text: str
    position: int


@dataclass
class ParsedFilter:
    """A compiled `$filter`: the predicate and what the expression needs from the request."""

    predicate: Predicate
    advanced: set[str] = field(default_factory=set)  # constructs that need advanced query mode
    properties: set[str] = field(default_factory=set)  # top-level properties it reads


@dataclass(frozen=True)
class _Literal:
    value: Any
    kind: str  # string | datetime | guid | number | bool | null


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _syntax(text, position)
        kind = match.lastgroup or "punct"
        tokens.append(_Token(kind, match.group(kind), match.start(kind)))
        position = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _syntax(text: str, position: int) -> GraphError:
    return bad_request(f"Invalid filter clause: syntax error at position {position} in '{text}'.")


def parse_datetime(value: Any) -> dt.datetime | None:
    """Graph timestamps as aware datetimes; "" means none, year 1 sorts before everything."""
    if not isinstance(value, str) or value == "":
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class _Parser:
    def __init__(self, text: str, properties: frozenset[str], type_name: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.known = {p.lower(): p for p in properties}
        self.type_name = type_name
        self.result = ParsedFilter(predicate=lambda obj: True)
        # Lambda variables read the current collection item from a cell the lambda fills.
        self.lambda_vars: dict[str, list[Any]] = {}

    # -- token helpers
    def peek(self, offset: int = 0) -> _Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.index += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token.kind == "name" and token.text.lower() == word:
            self.index += 1
            return True
        return False

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            raise _syntax(self.text, token.position)

    # -- grammar
    def parse(self) -> ParsedFilter:
        predicate = self.or_expr()
        if self.peek().kind != "end":
            raise _syntax(self.text, self.peek().position)
        self.result.predicate = predicate
        return self.result

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.keyword("or"):
            parts.append(self.and_expr())
        if len(parts) == 1:
            return parts[0]
        return lambda obj: any(part(obj) for part in parts)

    def and_expr(self) -> Predicate:
        parts = [self.unary()]
        while self.keyword("and"):
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        return lambda obj: all(part(obj) for part in parts)

    def unary(self) -> Predicate:
        if self.keyword("not"):
            self.result.advanced.add("not")
            inner = self.unary()
            return lambda obj: not inner(obj)
        return self.primary()

    def primary(self) -> Predicate:
        token = self.peek()
        if token.text == "(":
            self.take()
            inner = self.or_expr()
            self.expect(")")
            return inner
        if token.kind == "name" and token.text.lower() in ("startswith", "endswith", "contains"):
            return self.function()
        left = self.operand()
        if isinstance(left, tuple) and left[0] == "lambda":
            return left[1]
        if self.keyword("in"):
            return self.in_list(left)
        op = self.take()
        if op.kind != "name" or op.text.lower() not in _COMPARISONS:
            raise _syntax(self.text, op.position)
        right = self.operand()
        return self.comparison(op.text.lower(), left, right)

    def function(self) -> Predicate:
        name = self.take().text.lower()
        if name != "startswith":
            # endsWith works only in advanced mode on a few properties; contains never does.
            if name == "contains":
                raise unsupported_query(f"Unsupported Query. '{name}' is not supported.")
            self.result.advanced.add(name)
        self.expect("(")
        subject = self.operand()
        self.expect(",")
        prefix = self.operand()
        self.expect(")")
        if not isinstance(prefix, _Literal) or prefix.kind != "string":
            raise bad_request(f"Invalid filter clause: {name} needs a string literal.")
        needle = prefix.value.casefold()
        getter = self.getter(subject)

        def matches(obj: dict[str, Any]) -> bool:
            value = getter(obj)
            if not isinstance(value, str):
                return False
            folded = value.casefold()
            return folded.startswith(needle) if name == "startswith" else folded.endswith(needle)

        return matches

    def in_list(self, left: Any) -> Predicate:
        self.expect("(")
        values = [self.operand()]
        while self.peek().text == ",":
            self.take()
            values.append(self.operand())
        self.expect(")")
        if not all(isinstance(v, _Literal) for v in values):
            raise bad_request("Invalid filter clause: 'in' takes a list of literals.")
        comparisons = [self.comparison("eq", left, value) for value in values]
        return lambda obj: any(check(obj) for check in comparisons)

    def operand(self) -> Any:
        token = self.take()
        if token.kind == "string":
            return _Literal(token.text[1:-1].replace("''", "'"), "string")
        if token.kind == "datetime":
            return _Literal(parse_datetime(token.text), "datetime")
        if token.kind == "guid":
            return _Literal(token.text.lower(), "guid")
        if token.kind == "number":
            return _Literal(float(token.text) if "." in token.text else int(token.text), "number")
        if token.kind == "name":
            lowered = token.text.lower()
            if lowered in ("true", "false"):
                return _Literal(lowered == "true", "bool")
            if lowered == "null":
                return _Literal(None, "null")
            return self.path(token)
        raise _syntax(self.text, token.position)

    def path(self, first: _Token) -> Any:
        """A property path: `a`, `a/b`, `x/skuId` (lambda variable), `a/$count`, `a/any(...)`."""
        segments = [first.text]
        while self.peek().text == "/":
            self.take()
            segment = self.take()
            if segment.kind != "name":
                raise _syntax(self.text, segment.position)
            lowered = segment.text.lower()
            if lowered in ("any", "all") and self.peek().text == "(":
                return ("lambda", self.lambda_expr(segments, lowered))
            segments.append(segment.text)
        return self.resolve(segments)

    def resolve(self, segments: list[str]) -> tuple[str, list[str]]:
        head = segments[0]
        if head in self.lambda_vars:
            return ("var", [head, *segments[1:]])
        canonical = self.known.get(head.lower())
        if canonical is None and not head.lower().startswith("extension_"):
            raise bad_request(
                f"Could not find a property named '{head}' on type '{self.type_name}'."
            )
        canonical = canonical or head
        self.result.properties.add(canonical)
        if segments[-1] == "$count":
            self.result.advanced.add("$count")
        return ("prop", [canonical, *segments[1:]])

    def lambda_expr(self, collection: list[str], quantifier: str) -> Predicate:
        source = self.resolve(collection)
        self.expect("(")
        variable = self.take()
        if variable.kind != "name":
            raise _syntax(self.text, variable.position)
        self.expect(":")
        cell: list[Any] = [None]
        self.lambda_vars[variable.text] = cell
        body = self.or_expr()
        del self.lambda_vars[variable.text]
        self.expect(")")
        getter = self.getter(source)

        def check(obj: dict[str, Any], item: Any) -> bool:
            cell[0] = item
            return body(obj)

        def evaluate(obj: dict[str, Any]) -> bool:
            items = getter(obj) or []
            if quantifier == "any":
                return any(check(obj, item) for item in items)
            return all(check(obj, item) for item in items)

        return evaluate

    def getter(self, operand: Any) -> Getter:
        if isinstance(operand, _Literal):
            return lambda obj: operand.value
        kind, segments = operand

        def walk(value: Any, rest: list[str]) -> Any:
            for segment in rest:
                if segment == "$count":
                    return len(value) if isinstance(value, list) else 0
                if not isinstance(value, dict):
                    return None
                value = value.get(segment)
            return value

        if kind == "var":
            cell = self.lambda_vars[segments[0]]
            return lambda obj: walk(cell[0], segments[1:])
        return lambda obj: walk(obj, segments)

    def comparison(self, op: str, left: Any, right: Any) -> Predicate:
        if op == "ne":
            self.result.advanced.add("ne")
        if isinstance(left, _Literal) and not isinstance(right, _Literal):
            left, right = right, left
            op = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}.get(op, op)
        if not isinstance(right, _Literal):
            raise bad_request("Invalid filter clause: compare a property with a literal.")
        if right.kind == "null" and op in ("eq", "ne"):
            self.result.advanced.add(f"{op} null")
        getter = self.getter(left)
        literal = right
        return lambda obj: _compare(op, getter(obj), literal)


def _compare(op: str, value: Any, literal: _Literal) -> bool:
    target = literal.value
    if literal.kind == "null":
        return (value is None) == (op == "eq")
    if literal.kind == "datetime":
        # Year 1 is Graph's "never" inside signInActivity: it sorts before any real time.
        value = parse_datetime(value) if value != _NEVER else dt.datetime.min.replace(tzinfo=dt.UTC)
    elif isinstance(value, str) and isinstance(target, str):
        value, target = value.casefold(), target.casefold()
    if value is None:
        return op == "ne"
    try:
        if op == "eq":
            return value == target
        if op == "ne":
            return value != target
        if op == "gt":
            return value > target
        if op == "ge":
            return value >= target
        if op == "lt":
            return value < target
        return value <= target
    except TypeError:
        return False


def parse_filter(text: str, properties: frozenset[str], type_name: str) -> ParsedFilter:
    """Compile a `$filter` for objects with `properties` (Graph type `type_name`, for errors)."""
    return _Parser(text, properties, type_name).parse()
