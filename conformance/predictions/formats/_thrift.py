"""Thrift's compact protocol, the encoding of parquet's page headers and footer: just the writing half.

A struct is a list of ``(field_id, kind, value)`` fields in increasing id order; a field whose value is ``None``
is left out (thrift's optional fields). Kinds: ``"bool"``, ``"i16"``, ``"i32"``, ``"i64"``, ``"binary"`` (bytes or
str, written as UTF-8), ``"struct"`` (a list of fields) and ``"list:<kind>"`` (a list of values of that kind).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Field", "encode_struct", "varint"]

Field = tuple[int, str, Any]

_STOP = 0
_ELEMENT_CODES = {"bool": 1, "i16": 4, "i32": 5, "i64": 6, "binary": 8, "struct": 12}
_TYPE_CODES = {**_ELEMENT_CODES, **{f"list:{kind}": 9 for kind in _ELEMENT_CODES}}
_TRUE, _FALSE = 1, 2  # a bool field's value lives in its type code
_INTEGERS = frozenset({"i16", "i32", "i64"})


def varint(number: int) -> bytes:
    """``number`` (>= 0) as an unsigned LEB128 varint."""
    out = bytearray()
    _put_varint(out, number)
    return bytes(out)


def _put_varint(out: bytearray, number: int) -> None:
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)


def _put(out: bytearray, kind: str, value: Any) -> None:
    """Append ``value`` as the bytes that follow its field header or list header."""
    if kind in _INTEGERS:
        _put_varint(out, (value << 1) ^ (value >> 63))
    elif kind == "binary":
        data = value.encode() if isinstance(value, str) else value
        _put_varint(out, len(data))
        out += data
    elif kind == "struct":
        _put_struct(out, value)
    elif kind.startswith("list:"):
        element = kind[5:]
        code = _ELEMENT_CODES[element]
        if len(value) < 15:
            out.append(len(value) << 4 | code)
        else:
            out.append(0xF0 | code)
            _put_varint(out, len(value))
        for item in value:
            _put(out, element, item)
    else:
        raise ValueError(f"thrift kind {kind!r} is not one this encoder writes")


def _put_struct(out: bytearray, fields: list[Field]) -> None:
    last_id = 0
    for field_id, kind, value in fields:
        if value is None:
            continue
        if field_id <= last_id:
            raise ValueError(f"thrift field {field_id} follows field {last_id}: list fields in increasing id order")
        code = (_TRUE if value else _FALSE) if kind == "bool" else _TYPE_CODES[kind]
        if field_id - last_id <= 15:
            out.append((field_id - last_id) << 4 | code)
        else:
            out.append(code)
            _put_varint(out, field_id << 1)
        if kind != "bool":
            _put(out, kind, value)
        last_id = field_id
    out.append(_STOP)


def encode_struct(fields: list[Field]) -> bytes:
    """``fields`` as one compact-protocol struct, ending with its stop byte."""
    out = bytearray()
    _put_struct(out, fields)
    return bytes(out)
