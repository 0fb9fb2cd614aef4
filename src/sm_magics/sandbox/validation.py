"""Requests checked against the SageMaker service model, as the service checks them.

botocore checks types, required members and minimums on the client; the
service also enforces maximum lengths, enums, ranges and patterns, and answers
a ``ValidationException`` listing each broken constraint in the words used
here ("Value '…' at 'trainingJobName' failed to satisfy constraint: …").
The rules come from botocore's own copy of the service model.

Example::

    >>> validate_request("DescribeTrainingJob", {"TrainingJobName": "bad_name"})
    Traceback (most recent call last):
    ApiError: 1 validation error detected: Value 'bad_name' at 'trainingJobName' ...
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .protocol import ApiError

__all__ = ["service_model", "validate_request"]


def service_model():
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


def _lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _check(shape, value: Any, path: str, errors: list[str]) -> None:
    """Append AWS-style constraint messages for ``value`` against ``shape``."""
    kind = shape.type_name
    meta = shape.metadata

    def fail(constraint: str) -> None:
        shown = json.dumps(value) if not isinstance(value, str) else f"'{value}'"
        errors.append(f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}")

    if kind == "structure":
        if not isinstance(value, dict):
            return fail("Member must be a structure")
        for name in shape.required_members:
            if value.get(name) is None:
                where = f"{path}.{_lower_camel(name)}" if path else _lower_camel(name)
                errors.append(f"Value null at '{where}' failed to satisfy constraint: "
                              "Member must not be null")
        for name, member in value.items():
            if name in shape.members and member is not None:
                where = f"{path}.{_lower_camel(name)}" if path else _lower_camel(name)
                _check(shape.members[name], member, where, errors)
    elif kind == "list":
        if not isinstance(value, list):
            return fail("Member must be a list")
        _check_length(len(value), meta, fail)
        for index, item in enumerate(value, 1):
            _check(shape.member, item, f"{path}.{index}.member", errors)
    elif kind == "map":
        if not isinstance(value, dict):
            return fail("Member must be a map")
        _check_length(len(value), meta, fail)
        for key, item in value.items():
            _check(shape.key, key, f"{path}.key", errors)
            _check(shape.value, item, f"{path}.{key}", errors)
    elif kind == "string":
        if not isinstance(value, str):
            return fail("Member must be a string")
        if "enum" in meta and value not in meta["enum"]:
            return fail(f"Member must satisfy enum value set: [{', '.join(meta['enum'])}]")
        _check_length(len(value), meta, fail)
        if "pattern" in meta:
            try:
                matched = re.fullmatch(meta["pattern"], value, re.S)
            except re.error:  # a Java-only construct; AWS checks it, this sandbox does not
                matched = True
            if not matched:
                fail(f"Member must satisfy regular expression pattern: {meta['pattern']}")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            return fail("Member must be an integer")
        if "min" in meta and value < meta["min"]:
            fail(f"Member must have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            fail(f"Member must have value less than or equal to {meta['max']}")
    elif kind in ("float", "double"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            fail("Member must be a number")
    elif kind == "boolean":
        if not isinstance(value, bool):
            fail("Member must be a boolean")
    elif kind == "timestamp" and (not isinstance(value, int | float | str)
                                  or isinstance(value, bool)):
        fail("Member must be a timestamp")


def _check_length(length: int, meta: dict, fail: Callable[[str], None]) -> None:
    if "min" in meta and length < meta["min"]:
        fail(f"Member must have length greater than or equal to {meta['min']}")
    if "max" in meta and length > meta["max"]:
        fail(f"Member must have length less than or equal to {meta['max']}")


def validate_request(operation: str, request: Any, model=None) -> None:
    """Raise a ``ValidationException`` :class:`ApiError` when ``request`` breaks the API's rules.

    >>> validate_request("DescribeTrainingJob", {"TrainingJobName": "bad_name"})
    Traceback (most recent call last):
    ApiError: 1 validation error detected: Value 'bad_name' at 'trainingJobName' ...
    """
    shape = (model or service_model()).operation_model(operation).input_shape
    errors: list[str] = []
    _check(shape, request, "", errors)
    if errors:
        count = f"{len(errors)} validation error{'s' if len(errors) > 1 else ''} detected: "
        raise ApiError("ValidationException", count + "; ".join(errors))
