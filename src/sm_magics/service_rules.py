"""Requests checked against the full service model of their operation, as AWS checks them.

botocore checks types, required members and minimums on the client; the
services also enforce maximum lengths, enums, ranges and patterns, and answer
a ``ValidationException`` listing each broken constraint in these words
("Value '…' at 'tags.1.member.value' failed to satisfy constraint: …"). The
rules come from botocore's own copy of the service model; nothing here is a
hand-written copy of a limit.

The model's patterns are Java regular expressions matched against the whole
value (``String.matches``). They are translated for the ``regex`` package,
which knows ``\\p{L}`` and the other Unicode classes: Java's ``\\w``, ``\\d``,
``\\s`` and POSIX classes such as ``\\p{Alnum}`` are ASCII-only, ``.`` matches
anything but a line break, and ``\\uD800\\uDC00`` is one supplementary
character. A pattern this module cannot read raises :class:`PatternError`: a
value is never let through because its rule could not be checked.

Example::

    >>> validate("sagemaker", "AddTags", {"ResourceArn": "arn:aws:sagemaker:us-east-1:"
    ...          "123456789012:training-job/a", "Tags": [{"Key": "nb", "Value": "a (1)"}]})
    Traceback (most recent call last):
    RequestInvalid: 1 validation error detected: Value 'a (1)' at 'tags.1.member.value' ...
    >>> fit("sagemaker", "TagValue", "Untitled (1).ipynb")
    'Untitled _1_.ipynb'
"""

from __future__ import annotations

import datetime
import functools
import json
import string
import unicodedata
from dataclasses import dataclass
from typing import Any

__all__ = ["CharacterRule", "PatternError", "RequestInvalid", "Violation", "character_rule",
           "check", "check_value", "compile_pattern", "fit", "service_model", "shown_character",
           "validate"]

_LINE_BREAKS = "\n\r\x85\u2028\u2029"  # what Java's "." does not match
_SPACE = " \t\n\x0b\x0c\r"
# Java's shorthand and POSIX classes (ASCII-only without UNICODE_CHARACTER_CLASS).
_JAVA_SETS = {
    "d": string.digits, "w": string.ascii_letters + string.digits + "_", "s": _SPACE,
    "Lower": string.ascii_lowercase, "Upper": string.ascii_uppercase,
    "ASCII": "".join(map(chr, range(128))), "Alpha": string.ascii_letters,
    "Digit": string.digits, "Alnum": string.ascii_letters + string.digits,
    "Punct": string.punctuation, "Graph": string.ascii_letters + string.digits + string.punctuation,
    "Print": string.ascii_letters + string.digits + string.punctuation + " ", "Blank": " \t",
    "Cntrl": "".join(map(chr, [*range(32), 127])), "XDigit": string.hexdigits, "Space": _SPACE,
}
_SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "a": "\a", "e": "\x1b"}
# How a one-character rule's classes read in a sentence, in the order they are named.
_CLASS_WORDS = {"\\p{L}": "letters", "\\p{N}": "digits", "\\p{Z}": "spaces", "\\p{Zs}": "spaces",
                "\\p{M}": "accents", "\\p{P}": "punctuation", "\\p{S}": "symbols",
                "\\w": "A-Z a-z 0-9 _", "\\d": "0-9", "\\s": "whitespace",
                "\\S": "non-whitespace", "\\p{Alnum}": "A-Z a-z 0-9"}


class PatternError(Exception):
    """A pattern of the model that this module cannot read: a bug here, not in a request."""


# ---------------------------------------------------------------- the model


@functools.cache
def service_model(service: str):
    """botocore's model of ``service`` (``"sagemaker"``), loaded once per process."""
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def _model(service):
    return service_model(service) if isinstance(service, str) else service


# ---------------------------------------------------------------- Java patterns


@functools.cache
def compile_pattern(pattern: str):
    """``pattern`` (a Java regex of the model) as a compiled ``regex`` pattern.

    Raises :class:`PatternError` when it uses a construct that is not translated.

    >>> bool(compile_pattern(r"([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)").fullmatch("café 1"))
    True
    """
    import regex

    try:
        return regex.compile(_translate(pattern), regex.V0)
    except (regex.error, ValueError) as exc:  # ValueError: a malformed \u, \x or \p{...}
        raise PatternError(f"the model's pattern {pattern!r} does not compile: {exc}") from None


def _cp(code: int) -> str:
    return f"\\U{code:08x}"


def _body(chars: str, negate: bool = False) -> str:
    """A character-class body (no brackets) holding ``chars``, or all but them."""
    codes = sorted({ord(c) for c in chars})
    if negate:
        codes_set = set(codes)
        ranges, start = [], None
        for code in range(0x80):
            if code not in codes_set and start is None:
                start = code
            elif code in codes_set and start is not None:
                ranges.append((start, code - 1))
                start = None
        ranges.append((start if start is not None else 0x80, 0x10FFFF))
    else:
        ranges = [(c, c) for c in codes]
    return "".join(_cp(lo) if lo == hi else f"{_cp(lo)}-{_cp(hi)}" for lo, hi in ranges)


def _escape(pattern: str, i: int) -> tuple[str, Any, str, int]:
    """The escape at ``pattern[i]`` (a backslash): ``(kind, value, java_text, next_index)``.

    ``kind`` is ``"char"`` (value: a code point), ``"set"`` (value: a class body)
    or ``"raw"`` (value: text the regex package reads as Java does).
    """
    if i + 1 >= len(pattern):
        raise PatternError(f"{pattern!r} ends with a backslash")
    c = pattern[i + 1]
    if c in "dwsDWS":
        return "set", _body(_JAVA_SETS[c.lower()], negate=c.isupper()), pattern[i:i + 2], i + 2
    if c in "pP":
        if pattern[i + 2:i + 3] == "{":
            end = pattern.index("}", i + 3) + 1
            name = pattern[i + 3:end - 1]
        else:
            end, name = i + 3, pattern[i + 2:i + 3]
        text = pattern[i:end]
        if name in _JAVA_SETS:
            return "set", _body(_JAVA_SETS[name], negate=c == "P"), text, end
        return "raw", text, text, end
    if c == "u":
        code, end = int(pattern[i + 2:i + 6], 16), i + 6
        low = pattern[end:end + 6]
        if 0xD800 <= code <= 0xDBFF and low[:2] == "\\u" and 0xDC00 <= int(low[2:], 16) <= 0xDFFF:
            code = 0x10000 + ((code - 0xD800) << 10) + (int(low[2:], 16) - 0xDC00)
            end += 6
        return "char", code, pattern[i:end], end
    if c == "x":
        if pattern[i + 2:i + 3] == "{":
            end = pattern.index("}", i + 3) + 1
            return "char", int(pattern[i + 3:end - 1], 16), pattern[i:end], end
        return "char", int(pattern[i + 2:i + 4], 16), pattern[i:i + 4], i + 4
    if c in _SIMPLE_ESCAPES:
        return "char", ord(_SIMPLE_ESCAPES[c]), pattern[i:i + 2], i + 2
    if c in "bB":
        return "raw", pattern[i:i + 2], pattern[i:i + 2], i + 2
    if c.isdigit() and c != "0":
        end = i + 2
        while end < len(pattern) and pattern[end].isdigit():
            end += 1
        return "raw", pattern[i:end], pattern[i:end], end
    if not c.isalnum():
        return "char", ord(c), pattern[i:i + 2], i + 2
    raise PatternError(f"{pattern!r}: the escape \\{c} is not translated from Java")


def _class_items(pattern: str, i: int) -> tuple[bool, list[tuple], int]:
    """The character class opening at ``pattern[i]``: (negated, items, next_index).

    Items are ``("char", code, text)``, ``("range", (low, high), text)`` or
    ``("set", body, text)``.
    """
    i += 1
    negate = pattern[i:i + 1] == "^"
    i += negate
    items: list[tuple] = []
    first = True
    while True:
        if i >= len(pattern):
            raise PatternError(f"{pattern!r}: a character class is not closed")
        c = pattern[i]
        if c == "]" and not first:
            return negate, items, i + 1
        if c == "[" or pattern.startswith("&&", i):
            raise PatternError(f"{pattern!r}: nested classes and && are not translated from Java")
        if c == "\\":
            kind, value, text, i = _escape(pattern, i)
            if kind == "raw":
                if not text.startswith(("\\p", "\\P")):
                    raise PatternError(f"{pattern!r}: {text} inside a character class")
                kind = "set"
        else:
            kind, value, text, i = "char", ord(c), c, i + 1
        if (kind == "char" and pattern[i:i + 1] == "-" and i + 1 < len(pattern)
                and pattern[i + 1] != "]"):
            start = i
            high_kind, high, high_text, i = (_escape(pattern, i + 1) if pattern[i + 1] == "\\"
                                             else ("char", ord(pattern[i + 1]), pattern[i + 1],
                                                   i + 2))
            if high_kind != "char" or high < value:
                raise PatternError(f"{pattern!r}: a bad range at {pattern[start - 1:i]!r}")
            items.append(("range", (value, high), text + "-" + high_text))
        else:
            items.append((kind, value, text))
        first = False


def _class_body(items: list[tuple]) -> str:
    parts = []
    for kind, value, _ in items:
        if kind == "char":
            parts.append(_cp(value))
        elif kind == "range":
            parts.append(f"{_cp(value[0])}-{_cp(value[1])}")
        else:
            parts.append(value)
    return "".join(parts)


def _translate(pattern: str) -> str:
    """``pattern`` in the syntax of the ``regex`` package, with Java's meaning."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            kind, value, _, i = _escape(pattern, i)
            out.append(_cp(value) if kind == "char" else f"[{value}]" if kind == "set" else value)
        elif c == "[":
            negate, items, i = _class_items(pattern, i)
            out.append(f"[{'^' if negate else ''}{_class_body(items)}]")
        elif c == ".":
            out.append(f"[^{_body(_LINE_BREAKS)}]")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


# ---------------------------------------------------------------- one-character rules


@dataclass(frozen=True)
class CharacterRule:
    """A pattern that takes or refuses each character alone, e.g. ``([\\p{L}\\p{N}_]*)``.

    >>> rule = character_rule(r"([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)")
    >>> rule.refused("a,b (c)"), rule.describe()
    (['(', ')', ','], 'letters, digits, spaces and _ . : / = + - @')
    """

    pattern: str
    atom: str

    def refused(self, text: str) -> list[str]:
        """The distinct characters of ``text`` the rule refuses, in code-point order."""
        compiled = compile_pattern(self.atom)
        return sorted({c for c in text if not compiled.fullmatch(c)})

    def describe(self) -> str:
        """The characters taken, as a sentence names them (the pattern when it cannot)."""
        if self.atom == ".":
            return "any character but a line break"
        negate, items, _ = _class_items(self.atom, 0) if self.atom.startswith("[") else (
            False, [("set", None, self.atom)], 0)
        words, chars = [], []
        for kind, value, text in items:
            if kind == "set":
                if text not in _CLASS_WORDS:
                    return self.pattern
                words.append(text)
            elif kind == "char":
                chars.append(shown_character(chr(value)))
            else:
                chars.append("-".join(shown_character(chr(code)) for code in value))
        order = list(_CLASS_WORDS)
        named = [_CLASS_WORDS[w] for w in sorted(dict.fromkeys(words), key=order.index)]
        listed = " ".join(chars)
        taken = (", ".join(named) + (f" and {listed}" if listed else "")) if named else listed
        return f"anything but {taken}" if negate else taken


def shown_character(c: str) -> str:
    """``c`` as a message shows it: itself, or ``U+XXXX`` when it is invisible.

    >>> shown_character("@"), shown_character("\u2028")
    ('@', 'U+2028')
    """
    return c if c.isprintable() and not c.isspace() else f"U+{ord(c):04X}"


def character_rule(pattern: str) -> CharacterRule | None:
    """The :class:`CharacterRule` of ``pattern``, or ``None`` when it is not that kind.

    A one-character rule is one class (or ``.``) repeated, maybe in a group and
    anchored: ``[A-Za-z0-9\\-_]+``, ``([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)``, ``.*``.

    >>> character_rule("[a-zA-Z_][a-zA-Z0-9_]*") is None
    True
    """
    import re

    core = pattern.removeprefix("^")
    core = re.sub(r"\$(\{\d+(,\d*)?\})?$", "", core)
    if core.startswith("(") and core.endswith(")") and core.count("(") == 1:
        core = core[1:-1]
    atom = r"\[(?:\\.|[^\\\]])+\]|\.|\\[dDwWsS]|\\[pP]\{\w+\}"
    match = re.fullmatch(rf"(?:\(({atom})\)|({atom}))(?:[*+]|\{{\d+(?:,\d*)?\}})", core)
    return CharacterRule(pattern, match.group(1) or match.group(2)) if match else None


# ---------------------------------------------------------------- violations


@dataclass(frozen=True)
class Violation:
    """One broken constraint: where, which rule of which shape, and AWS's words for it.

    ``members`` is the place in the request as botocore names it
    (``("Tags", 0, "Value")``); ``path`` as AWS names it (``tags.1.member.value``).
    ``rule`` is ``required``, ``type``, ``enum``, ``min_length``, ``max_length``
    (characters of a string, entries of a list or map), ``min``, ``max`` or
    ``pattern``; ``limit`` is its bound, enum values or pattern.
    """

    members: tuple
    path: str
    shape: str
    rule: str
    limit: Any
    value: Any
    constraint: str

    @property
    def message(self) -> str:
        """``Value '…' at '…' failed to satisfy constraint: …``, as AWS words it."""
        if self.value is None:
            shown = "null"
        else:
            shown = f"'{self.value}'" if isinstance(self.value, str) else json.dumps(
                self.value, default=str)
        return f"Value {shown} at '{self.path}' failed to satisfy constraint: {self.constraint}"


class RequestInvalid(ValueError):
    """A request that breaks its operation's model; ``str()`` is AWS's message for it."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        count = len(violations)
        super().__init__(f"{count} validation error{'s' if count > 1 else ''} detected: "
                         + "; ".join(v.message for v in violations))


def _lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _walk(shape, value: Any, members: tuple, path: str, found: list[Violation]) -> None:
    kind = shape.type_name
    meta = shape.metadata

    def fail(rule: str, limit: Any, constraint: str) -> None:
        found.append(Violation(members, path, shape.name, rule, limit, value, constraint))

    def lengths(length: int) -> None:
        if "min" in meta and length < meta["min"]:
            fail("min_length", meta["min"],
                 f"Member must have length greater than or equal to {meta['min']}")
        if "max" in meta and length > meta["max"]:
            fail("max_length", meta["max"],
                 f"Member must have length less than or equal to {meta['max']}")

    def ranges() -> None:
        if "min" in meta and value < meta["min"]:
            fail("min", meta["min"],
                 f"Member must have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            fail("max", meta["max"],
                 f"Member must have value less than or equal to {meta['max']}")

    if kind == "structure":
        if not isinstance(value, dict):
            return fail("type", "structure", "Member must be a structure")
        for name in shape.required_members:
            if value.get(name) is None:
                where = f"{path}.{_lower_camel(name)}" if path else _lower_camel(name)
                found.append(Violation((*members, name), where, shape.members[name].name,
                                       "required", None, None, "Member must not be null"))
        for name, member in value.items():
            if name in shape.members and member is not None:
                where = f"{path}.{_lower_camel(name)}" if path else _lower_camel(name)
                _walk(shape.members[name], member, (*members, name), where, found)
    elif kind == "list":
        if not isinstance(value, list):
            return fail("type", "list", "Member must be a list")
        lengths(len(value))
        for index, item in enumerate(value):
            _walk(shape.member, item, (*members, index), f"{path}.{index + 1}.member", found)
    elif kind == "map":
        if not isinstance(value, dict):
            return fail("type", "map", "Member must be a map")
        lengths(len(value))
        for key, item in value.items():
            _walk(shape.key, key, (*members, key), f"{path}.key", found)
            _walk(shape.value, item, (*members, key), f"{path}.{key}", found)
    elif kind == "string":
        if not isinstance(value, str):
            return fail("type", "string", "Member must be a string")
        if "enum" in meta and value not in meta["enum"]:
            return fail("enum", meta["enum"],
                        f"Member must satisfy enum value set: [{', '.join(meta['enum'])}]")
        lengths(len(value))
        if "pattern" in meta and not compile_pattern(meta["pattern"]).fullmatch(value):
            fail("pattern", meta["pattern"],
                 f"Member must satisfy regular expression pattern: {meta['pattern']}")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            return fail("type", kind, "Member must be an integer")
        ranges()
    elif kind in ("float", "double"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return fail("type", kind, "Member must be a number")
        ranges()
    elif kind == "boolean":
        if not isinstance(value, bool):
            fail("type", kind, "Member must be a boolean")
    elif kind == "timestamp" and (not isinstance(value, int | float | str | datetime.datetime)
                                  or isinstance(value, bool)):  # datetime: read from CBOR, query
        fail("type", kind, "Member must be a timestamp")


def check(service, operation: str, request: Any) -> list[Violation]:
    """Every constraint of ``operation``'s model that ``request`` breaks, in AWS's order.

    ``service`` is a service name (``"sagemaker"``) or a botocore service model.

    >>> [v.path for v in check("sagemaker", "DescribeTrainingJob", {"TrainingJobName": "a_b"})]
    ['trainingJobName']
    """
    shape = _model(service).operation_model(operation).input_shape
    found: list[Violation] = []
    if shape is not None:
        _walk(shape, request, (), "", found)
    return found


def validate(service, operation: str, request: Any) -> None:
    """Raise :class:`RequestInvalid` when ``request`` breaks ``operation``'s model.

    >>> validate("sagemaker", "DescribeTrainingJob", {"TrainingJobName": "fraud-1"})
    """
    found = check(service, operation, request)
    if found:
        raise RequestInvalid(found)


def check_value(service, shape_name: str, value: Any, path: str = "") -> list[Violation]:
    """The constraints of the model's shape ``shape_name`` that ``value`` breaks.

    >>> [v.rule for v in check_value("sagemaker", "TrainingJobName", "x" * 70)]
    ['max_length', 'pattern']
    """
    found: list[Violation] = []
    _walk(_model(service).shape_for(shape_name), value, (), path, found)
    return found


def fit(service, shape_name: str, text: str, replacement: str = "_") -> str:
    """``text`` made to satisfy the string shape ``shape_name``: characters replaced, end kept.

    The text is put in Unicode's composed form (an accent and its letter become
    one letter), each character the shape's pattern refuses becomes
    ``replacement``, and a text longer than the shape's maximum keeps its end.
    Raises ``ValueError`` when the shape's pattern is not a one-character rule.

    >>> fit("sagemaker", "TagValue", "analyse #3 & co.ipynb")
    'analyse _3 _ co.ipynb'
    """
    shape = _model(service).shape_for(shape_name)
    text = unicodedata.normalize("NFC", text)
    pattern = shape.metadata.get("pattern")
    if pattern:
        rule = character_rule(pattern)
        if rule is None:
            raise ValueError(f"{shape_name}'s pattern {pattern} is not a one-character rule")
        refused = set(rule.refused(text))
        text = "".join(replacement if c in refused else c for c in text)
    if "max" in shape.metadata:
        text = text[-shape.metadata["max"]:]
    if check_value(service, shape_name, text):
        raise ValueError(f"{text!r} cannot be made to fit {shape_name}")
    return text
