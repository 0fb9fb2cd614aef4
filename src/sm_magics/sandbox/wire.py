"""Requests as they travel, read back into the parameters the service model describes.

AWS clients send one request in one of several wire forms (botocore's
``serialize.py`` writes them; the sandbox reads them here):

* **query** (IAM, STS; CloudWatch with older botocore): form fields such as
  ``Action=ListRoles&PathPrefix=/service-role/`` and, for nested values,
  dotted names: ``Tags.member.1.Key=team``, ``Attributes.entry.1.key=x``.
  :func:`query_params` turns them back into ``{"Tags": [{"Key": "team"}]}`` by
  walking the operation's input shape.
* **rpc-v2-cbor** (CloudWatch with current botocore): the parameters as one
  CBOR map (RFC 8949). :func:`cbor_decode` reads it, :func:`cbor_encode`
  writes the error answers.

JSON needs no reading back, and S3's REST requests are read by
:mod:`.s3_requests`.

Examples::

    >>> from sm_magics.service_rules import service_model
    >>> shape = service_model("iam").operation_model("TagRole").input_shape
    >>> query_params(shape, {"RoleName": ["r"], "Tags.member.1.Key": ["team"],
    ...                      "Tags.member.1.Value": ["ml"]})
    {'RoleName': 'r', 'Tags': [{'Key': 'team', 'Value': 'ml'}]}
    >>> cbor_decode(cbor_encode({"Namespace": "ns", "Values": [1, 2.5, True]}))
    {'Namespace': 'ns', 'Values': [1, 2.5, True]}
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Mapping
from typing import Any

__all__ = ["WireError", "cbor_decode", "cbor_encode", "query_params"]


class WireError(ValueError):
    """A request body that is not what its protocol says it is."""


# ---------------------------------------------------------------- the query protocol


def query_params(shape, form: Mapping[str, list[str]]) -> dict[str, Any]:
    """The parameters of a query-protocol request (``form`` as ``parse_qs`` gives it).

    Values are converted by their shape's type (integers, booleans, timestamps);
    a value that does not convert is kept as text, for the model check to name.
    """
    fields = {name: values[-1] for name, values in form.items() if values}
    return _structure(shape, fields, "") or {}


def _name(shape, member: str) -> str:
    return shape.serialization.get("name", member)


def _read(shape, fields: dict[str, str], prefix: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        return _structure(shape, fields, prefix)
    if kind == "list":
        return _list(shape, fields, prefix)
    if kind == "map":
        return _map(shape, fields, prefix)
    if prefix not in fields:
        return None
    return _scalar(shape, fields[prefix])


def _structure(shape, fields: dict[str, str], prefix: str) -> dict[str, Any] | None:
    found = {}
    for member, member_shape in shape.members.items():
        name = _name(member_shape, member)
        value = _read(member_shape, fields, f"{prefix}.{name}" if prefix else name)
        if value is not None:
            found[member] = value
    return found if found or not prefix else None


def _list(shape, fields: dict[str, str], prefix: str) -> list[Any] | None:
    if fields.get(prefix) == "":
        return []  # botocore sends an empty list as the bare name
    if not shape.serialization.get("flattened"):
        prefix = f"{prefix}.{shape.member.serialization.get('name', 'member')}"
    items = []
    while True:
        item = _read(shape.member, fields, f"{prefix}.{len(items) + 1}")
        if item is None:
            return items or None
        items.append(item)


def _map(shape, fields: dict[str, str], prefix: str) -> dict[str, Any] | None:
    if not shape.serialization.get("flattened"):
        prefix = f"{prefix}.entry"
    key_name = shape.key.serialization.get("name", "key")
    value_name = shape.value.serialization.get("name", "value")
    found = {}
    index = 1
    while f"{prefix}.{index}.{key_name}" in fields:
        key = fields[f"{prefix}.{index}.{key_name}"]
        found[key] = _read(shape.value, fields, f"{prefix}.{index}.{value_name}")
        index += 1
    return found or None


def _scalar(shape, text: str) -> Any:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("float", "double"):
            return float(text)
    except ValueError:
        return text
    if kind == "boolean":
        return {"true": True, "false": False}.get(text, text)
    if kind == "timestamp":
        try:
            return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text
    if kind == "blob":
        import base64
        import binascii

        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return text
    return text


# ---------------------------------------------------------------- CBOR (RFC 8949)

_BREAK = object()


def cbor_decode(data: bytes) -> Any:
    """The one data item ``data`` holds; :class:`WireError` when it is not well-formed CBOR.

    Tag 1 (epoch time, what rpc-v2-cbor uses for timestamps) becomes a UTC datetime.
    """
    try:
        value, end = _item(memoryview(data), 0)
    except (IndexError, struct.error, UnicodeDecodeError, RecursionError) as exc:
        raise WireError(f"The body is not well-formed CBOR: {exc}") from None
    if value is _BREAK or end != len(data):
        raise WireError("The body is not one well-formed CBOR data item.")
    return value


def _length(data: memoryview, info: int, at: int) -> tuple[int | None, int]:
    if info < 24:
        return info, at
    if info == 31:
        return None, at  # indefinite length
    size = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if size is None:
        raise WireError(f"Reserved CBOR length {info}.")
    return int.from_bytes(data[at:at + size], "big"), at + size


def _item(data: memoryview, at: int) -> tuple[Any, int]:
    initial = data[at]
    major, info = initial >> 5, initial & 0x1F
    at += 1
    if major == 7:
        return _simple(data, info, at)
    length, at = _length(data, info, at)
    if major == 0:
        return length, at
    if major == 1:
        return -1 - length, at
    if major in (2, 3):
        if length is None:  # chunks of the same major type up to a break
            chunks = []
            while data[at] != 0xFF:
                chunk, at = _item(data, at)
                chunks.append(chunk)
            return (b"" if major == 2 else "").join(chunks), at + 1
        raw = bytes(data[at:at + length])
        if len(raw) != length:
            raise WireError("A CBOR string runs past the end of the body.")
        return (raw if major == 2 else raw.decode("utf-8")), at + length
    if major == 4:
        items = []
        while length is None or len(items) < length:
            item, at = _item(data, at)
            if item is _BREAK:
                break
            items.append(item)
        return items, at
    if major == 5:
        found = {}
        while length is None or len(found) < length:
            key, at = _item(data, at)
            if key is _BREAK:
                break
            found[key], at = _item(data, at)
        return found, at
    value, at = _item(data, at)  # major 6: a tag
    if length == 1 and isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.UTC), at
    return value, at


def _simple(data: memoryview, info: int, at: int) -> tuple[Any, int]:
    if info == 20:
        return False, at
    if info == 21:
        return True, at
    if info in (22, 23):
        return None, at
    if info == 25:
        return struct.unpack(">e", data[at:at + 2])[0], at + 2
    if info == 26:
        return struct.unpack(">f", data[at:at + 4])[0], at + 4
    if info == 27:
        return struct.unpack(">d", data[at:at + 8])[0], at + 8
    if info == 31:
        return _BREAK, at
    raise WireError(f"Unsupported CBOR simple value {info}.")


def cbor_encode(value: Any) -> bytes:
    """``value`` (text, bytes, numbers, booleans, None, lists, maps, datetimes) as CBOR."""

    def head(major: int, length: int) -> bytes:
        if length < 24:
            return bytes([major << 5 | length])
        for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if length < 1 << (8 * size):
                return bytes([major << 5 | info]) + length.to_bytes(size, "big")
        raise WireError("Too long for CBOR.")

    if value is None:
        return b"\xf6"
    if value is True or value is False:
        return b"\xf5" if value else b"\xf4"
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, float):
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return head(3, len(raw)) + raw
    if isinstance(value, (bytes, bytearray)):
        return head(2, len(value)) + bytes(value)
    if isinstance(value, datetime.datetime):
        return b"\xc1" + cbor_encode(value.timestamp())
    if isinstance(value, Mapping):
        return head(5, len(value)) + b"".join(
            cbor_encode(k) + cbor_encode(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return head(4, len(value)) + b"".join(cbor_encode(item) for item in value)
    raise WireError(f"Cannot write a {type(value).__name__} as CBOR.")
