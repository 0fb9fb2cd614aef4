"""IAM identity policies, evaluated as IAM does for one action on one resource.

The rules followed (IAM User Guide, "Policy evaluation logic" and "IAM JSON
policy elements reference"):

* a statement applies when its ``Action`` (or ``NotAction``), its ``Resource``
  (or ``NotResource``) and every ``Condition`` match the request;
* an applying ``Deny`` wins over any ``Allow``; with no applying ``Allow`` the
  request is denied (the default deny);
* ``*`` matches any run of characters (``/`` and ``:`` included), ``?`` one
  character; actions match without regard to case, resources with it;
* within ``Condition``: every operator must hold, every key of an operator
  must hold, and a key holds when any of its values matches. A key missing from
  the request makes the operator false, except for the negated operators
  (``StringNotEquals``, ``StringNotLike``...), which are then true, and the
  ``...IfExists`` forms, which are then true as well.

What this module cannot evaluate never lets a request through: an operator it
does not know (``IpAddress``, ``DateLessThan``...) or a policy variable
(``${aws:username}``) makes an ``Allow`` statement not apply and a ``Deny``
statement apply.

Example::

    >>> policy = Policy.load("AmazonSageMakerFullAccess")
    >>> policy.evaluate("ecr:PutImage",
    ...                 "arn:aws:ecr:us-east-1:123456789012:repository/sagemaker-digits").allowed
    True
    >>> policy.evaluate("ecr:PutImage",
    ...                 "arn:aws:ecr:us-east-1:123456789012:repository/digits").reason
    'because no identity-based policy allows the ecr:PutImage action'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["MANAGED_POLICIES", "Decision", "Policy", "PolicyError", "matches"]

DATA = Path(__file__).resolve().parent / "data"
# Managed policies shipped with the package, by the name AWS gives them.
MANAGED_POLICIES = {
    "AmazonSageMakerFullAccess": DATA / "AmazonSageMakerFullAccess-v29-sandbox-statements.json",
}
_STRING_OPERATORS = {
    "StringEquals": (False, False, False),  # (negated, like, ignore case)
    "StringNotEquals": (True, False, False),
    "StringEqualsIgnoreCase": (False, False, True),
    "StringNotEqualsIgnoreCase": (True, False, True),
    "StringLike": (False, True, False),
    "StringNotLike": (True, True, False),
    "ArnEquals": (False, True, False),  # ARN operators compare as StringLike does
    "ArnLike": (False, True, False),
    "ArnNotEquals": (True, True, False),
    "ArnNotLike": (True, True, False),
}


class PolicyError(ValueError):
    """A policy document that is not an IAM identity policy (the message says why)."""


@dataclass(frozen=True)
class Decision:
    """The outcome for one action on one resource.

    ``allowed``; ``explicit`` when a ``Deny`` statement decided it; ``statement``
    is the ``Sid`` (or position) of the statement that decided it, when one did.
    """

    allowed: bool
    action: str
    explicit: bool = False
    statement: str | None = None

    @property
    def reason(self) -> str:
        """Why, in the words AWS ends an AccessDenied message with."""
        if self.allowed:
            return f"allowed by statement {self.statement}"
        if self.explicit:
            return "with an explicit deny in an identity-based policy"
        return f"because no identity-based policy allows the {self.action} action"


@lru_cache(maxsize=512)
def _pattern(glob: str, ignore_case: bool) -> re.Pattern:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def matches(glob: str, value: str, ignore_case: bool = False) -> bool:
    """Whether ``value`` matches the IAM wildcard pattern ``glob`` (``*`` and ``?``).

    >>> matches("arn:aws:s3:::*sagemaker*", "arn:aws:s3:::sagemaker-us-east-1-1/a/b")
    True
    >>> matches("ecr:describe*", "ecr:DescribeImages", ignore_case=True)
    True
    """
    return _pattern(glob, ignore_case).fullmatch(value) is not None


def _strings(value: Any, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise PolicyError(f"{where} must be a string or a non-empty list of strings")
    return values


class _Unknown(Exception):
    """Something in a statement this module cannot evaluate."""


@dataclass(frozen=True)
class _Statement:
    sid: str
    allow: bool
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    conditions: Mapping[str, Mapping[str, list[str]]]

    @classmethod
    def parse(cls, raw: Any, position: int) -> _Statement:
        where = f"Statement {position}"
        if not isinstance(raw, dict):
            raise PolicyError(f"{where} is not a JSON object")
        sid = str(raw.get("Sid") or position)
        if raw.get("Effect") not in ("Allow", "Deny"):
            raise PolicyError(f"{where}: Effect must be Allow or Deny")
        if "Principal" in raw or "NotPrincipal" in raw:
            raise PolicyError(f"{where} names a Principal: that is a resource policy, and an "
                              "identity policy is needed")
        if ("Action" in raw) == ("NotAction" in raw):
            raise PolicyError(f"{where} needs exactly one of Action and NotAction")
        if ("Resource" in raw) == ("NotResource" in raw):
            raise PolicyError(f"{where} needs exactly one of Resource and NotResource")
        action_key = "Action" if "Action" in raw else "NotAction"
        resource_key = "Resource" if "Resource" in raw else "NotResource"
        conditions = raw.get("Condition", {})
        if not isinstance(conditions, dict) or not all(
                isinstance(keys, dict) for keys in conditions.values()):
            raise PolicyError(f"{where}: Condition must map operators to {{key: values}}")
        return cls(
            sid, raw["Effect"] == "Allow",
            tuple(_strings(raw[action_key], f"{where} {action_key}")), action_key == "NotAction",
            tuple(_strings(raw[resource_key], f"{where} {resource_key}")),
            resource_key == "NotResource",
            {op: {key: [str(v) for v in ([values] if not isinstance(values, list) else values)]
                  for key, values in keys.items()} for op, keys in conditions.items()},
        )

    def applies(self, action: str, resource: str, context: Mapping[str, Any]) -> bool:
        """Whether this statement applies; raises :class:`_Unknown` when that cannot be told."""
        named = any(matches(a, action, ignore_case=True) for a in self.actions)
        if named == self.not_action:
            return False
        if any("${" in r for r in self.resources):
            raise _Unknown("policy variables")
        named = any(matches(r, resource) for r in self.resources)
        if named == self.not_resource:
            return False
        return all(_condition(op, keys, context) for op, keys in self.conditions.items())


def _condition(operator: str, keys: Mapping[str, list[str]], context: Mapping[str, Any]) -> bool:
    name = operator
    if_exists = name.endswith("IfExists")
    name = name.removesuffix("IfExists")
    for key, wanted in keys.items():
        present = next((v for k, v in context.items() if k.lower() == key.lower()), None)
        if name == "Null":
            if (present is None) != (wanted[0].lower() == "true"):
                return False
            continue
        if name == "Bool":
            if present is None:
                if not if_exists:
                    return False
                continue
            if str(present).lower() not in (w.lower() for w in wanted):
                return False
            continue
        if name not in _STRING_OPERATORS:
            raise _Unknown(f"the condition operator {operator}")
        negated, like, ignore_case = _STRING_OPERATORS[name]
        if present is None:
            if not (negated or if_exists):
                return False
            continue
        values = [str(v) for v in (present if isinstance(present, list | tuple) else [present])]
        found = any(_string_match(w, v, like, ignore_case) for w in wanted for v in values)
        if found == negated:
            return False
    return True


def _string_match(pattern: str, value: str, like: bool, ignore_case: bool) -> bool:
    if like:
        return matches(pattern, value, ignore_case)
    return pattern.lower() == value.lower() if ignore_case else pattern == value


class Policy:
    """One or more identity policies of a principal, evaluated together.

    >>> Policy({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    ...        ).evaluate("s3:GetObject", "arn:aws:s3:::b/k").allowed
    True
    """

    def __init__(self, *documents: Mapping[str, Any], name: str = "policy") -> None:
        self.name = name
        self.statements: list[_Statement] = []
        for document in documents:
            if not isinstance(document, Mapping) or "Statement" not in document:
                raise PolicyError("a policy is a JSON object with a Statement")
            raw = document["Statement"]
            for statement in [raw] if isinstance(raw, dict) else list(raw):
                self.statements.append(_Statement.parse(statement, len(self.statements)))

    @classmethod
    def load(cls, source: str | Path) -> Policy:
        """The policy in the JSON file ``source``, or a shipped managed policy by its name."""
        path = MANAGED_POLICIES.get(str(source), Path(source))
        try:
            document = json.loads(Path(path).expanduser().read_text())
        except OSError as exc:
            raise PolicyError(f"the policy file {path} cannot be read ({exc.strerror}); "
                              f"give a JSON file or one of {', '.join(MANAGED_POLICIES)}"
                              ) from None
        except ValueError as exc:
            raise PolicyError(f"the policy file {path} is not JSON: {exc}") from None
        name = str(source) if str(source) in MANAGED_POLICIES else Path(path).name
        return cls(document, name=name)

    def evaluate(self, action: str, resource: str,
                 context: Mapping[str, Any] | None = None) -> Decision:
        """Whether this policy allows ``action`` on ``resource`` with the request ``context``."""
        context = context or {}
        allowed_by = None
        for statement in self.statements:
            try:
                applies = statement.applies(action, resource, context)
            except _Unknown:
                applies = not statement.allow  # never more permissive than AWS would be
            if applies and not statement.allow:
                return Decision(False, action, explicit=True, statement=statement.sid)
            if applies and allowed_by is None:
                allowed_by = statement.sid
        return Decision(allowed_by is not None, action, statement=allowed_by)
