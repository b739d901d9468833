"""Replies assembled from protobuf bytes encoded once per record state.

kubelet lists every pod and container about once a second and asks each pod's status on
every sync; building and serialising those messages in Python cost more than anything
else in the call (ListContainers at 500 containers: ~270 KB, 3 to 4 ms). In the wire format
a message field is its tag, its length as a varint, then its bytes, and a repeated
field is that once per item, in order; a reply is the concatenation of its fields. So
each record's item is encoded once, kept while the inputs it was built from stay the
same (the key a handler gives), and a reply joins the items that pass the filter.

The bytes parse as the reply the message-building code makes (tests/unit/test_wire.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

_R = TypeVar("_R")

LENGTH_DELIMITED = 2
VARINT = 0


class Encoded:
    """A reply already in wire format; the Dispatcher sends :attr:`data` as it is.

    Reading any other attribute parses it first (once), so code that wants the message
    (the Stream* variants, debug logs, tests) reads it as it would the message.
    """

    __slots__ = ("_message", "data", "message_class")

    def __init__(self, data: bytes, message_class: type[Message]) -> None:
        self.data = data
        self.message_class = message_class
        self._message: Message | None = None

    def message(self) -> Message:
        if self._message is None:
            self._message = self.message_class.FromString(self.data)
        return self._message

    def __getattr__(self, name: str) -> Any:
        return getattr(self.message(), name)

    def __repr__(self) -> str:
        return f"Encoded({self.message_class.__name__}, {len(self.data)} bytes)"


def as_message(reply: Message | Encoded) -> Message:
    return reply.message() if isinstance(reply, Encoded) else reply


def varint(n: int) -> bytes:
    """The base-128 varint of ``n``; a negative int64 as its 64-bit two's complement."""
    if n < 0:
        n += 1 << 64
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a message, string or bytes): tag, length, payload."""
    return tag(number, LENGTH_DELIMITED) + varint(len(payload)) + payload


def int_field(number: int, value: int) -> bytes:
    """An int32/int64/enum field; nothing for 0, as proto3 leaves defaults out."""
    return tag(number, VARINT) + varint(value) if value else b""


def number(message_class: type[Message], name: str) -> int:
    """The field number of ``name`` in ``message_class`` (from the descriptor, not by hand)."""
    n: int = message_class.DESCRIPTOR.fields_by_name[name].number
    return n


class Encodings(Generic[_R]):
    """Each record's encoded item, kept while it was made from the same ``source`` object
    (compared by identity: the record's frozen metadata) with an equal ``key`` (what
    can change: the frozen status value, or the state and addresses of a status changed
    in place). A record whose key changed is encoded again, so a reply never shows a
    stale state. Entries of records that are gone are dropped by :meth:`keep` (the list
    calls pass every live id) or, past a bound, all at once.
    """

    def __init__(self, encode: Callable[[_R], bytes], bound: int = 4096) -> None:
        self._encode = encode
        self._entries: dict[str, tuple[object, Hashable, bytes]] = {}
        self.bound = bound

    def get(self, record_id: str, source: object, key: Hashable, record: _R) -> bytes:
        entry = self._entries.get(record_id)
        if entry is not None and entry[0] is source and (entry[1] is key or entry[1] == key):
            return entry[2]
        data = self._encode(record)
        if len(self._entries) >= self.bound:
            self._entries.clear()
        self._entries[record_id] = (source, key, data)
        return data

    def keep(self, live: set[str]) -> None:
        """Drop the entries of records not in ``live``."""
        if len(self._entries) > len(live):
            for gone in self._entries.keys() - live:
                del self._entries[gone]

    def __len__(self) -> int:
        return len(self._entries)
