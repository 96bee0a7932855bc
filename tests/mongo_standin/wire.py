"""The MongoDB wire protocol: OP_MSG both ways, OP_QUERY in and OP_REPLY out for handshakes.

PyMongo opens every connection with a legacy OP_QUERY ``isMaster`` and switches to OP_MSG
once the reply shows a modern server; compression, checksums and exhaust are never
negotiated here, so they are not implemented.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from typing import Any, Final

import bson
from bson.codec_options import CodecOptions

from tests.mongo_standin.values import UTC

OP_REPLY: Final = 1
OP_QUERY: Final = 2004
OP_MSG: Final = 2013
HEADER: Final = struct.Struct("<iiii")
_INT32: Final = struct.Struct("<i")
_REPLY_PREFIX: Final = struct.Struct("<iqii")
CHECKSUM_PRESENT: Final = 1
MORE_TO_COME: Final = 2
CODEC: Final[CodecOptions[dict[str, Any]]] = CodecOptions(tz_aware=True, tzinfo=UTC)

_request_ids = itertools.count(1)


class ProtocolError(Exception):
    """A message the stand-in cannot read; the connection is closed, as a server does."""


@dataclass(frozen=True)
class Request:
    request_id: int
    command: dict[str, Any]
    database: str
    more_to_come: bool  # the client expects no reply (unacknowledged writes)
    legacy: bool  # came as OP_QUERY: answer with OP_REPLY


def message_length(buffer: bytes | bytearray) -> int:
    return int(_INT32.unpack_from(buffer, 0)[0])


def parse(message: bytes) -> Request:
    """One whole message, header included."""
    _, request_id, _, opcode = HEADER.unpack_from(message, 0)
    if opcode == OP_MSG:
        return _parse_msg(request_id, message)
    if opcode == OP_QUERY:
        return _parse_query(request_id, message)
    raise ProtocolError(f"unsupported opcode {opcode}")


def _parse_msg(request_id: int, message: bytes) -> Request:
    flags = int.from_bytes(message[16:20], "little")
    end = len(message) - (4 if flags & CHECKSUM_PRESENT else 0)
    position = 20
    command: dict[str, Any] | None = None
    sequences: dict[str, list[Any]] = {}
    while position < end:
        kind = message[position]
        position += 1
        size = _INT32.unpack_from(message, position)[0]
        if kind == 0:
            command = bson.decode(message[position : position + size], CODEC)
        elif kind == 1:
            name_end = message.index(b"\0", position + 4)
            identifier = message[position + 4 : name_end].decode()
            sequences[identifier] = bson.decode_all(message[name_end + 1 : position + size], CODEC)
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
        position += size
    if command is None:
        raise ProtocolError("OP_MSG without a body section")
    command.update(sequences)
    database = command.pop("$db", "admin")
    return Request(request_id, command, database, bool(flags & MORE_TO_COME), legacy=False)


def _parse_query(request_id: int, message: bytes) -> Request:
    name_end = message.index(b"\0", 20)
    collection = message[20:name_end].decode()
    position = name_end + 1 + 8  # numberToSkip, numberToReturn
    size = _INT32.unpack_from(message, position)[0]
    query = bson.decode(message[position : position + size], CODEC)
    if "$query" in query:
        query = query["$query"]
    database, _, _ = collection.partition(".")
    return Request(request_id, query, database, more_to_come=False, legacy=True)


def encode_msg(response_to: int, reply: dict[str, Any]) -> bytes:
    body = bson.encode(reply)
    length = HEADER.size + 4 + 1 + len(body)
    header = HEADER.pack(length, next(_request_ids), response_to, OP_MSG)
    return b"".join((header, b"\0\0\0\0\0", body))


def encode_reply(response_to: int, reply: dict[str, Any]) -> bytes:
    body = bson.encode(reply)
    length = HEADER.size + _REPLY_PREFIX.size + len(body)
    header = HEADER.pack(length, next(_request_ids), response_to, OP_REPLY)
    return b"".join((header, _REPLY_PREFIX.pack(0, 0, 0, 1), body))
