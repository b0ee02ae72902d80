"""The shim <-> agent wire protocol (docs/wire.md), and the CLI's admin frames.

Frames are ``magic (4 bytes) | body_len (u32 big-endian) | body``:

* ``CNI1`` request from the shim: CNI_* env + the shim's fields, stdin, netns fd (SCM_RIGHTS);
* ``CNR1`` response to the shim: exit code, stdout bytes, stderr bytes;
* ``ADM1`` / ``ADR1`` admin request / reply: a JSON object.

Protocol failures raise :class:`WireError` (not a CNIError: the agent decides how to answer).
stdlib only.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

MAGIC_REQUEST = b"CNI1"
MAGIC_RESPONSE = b"CNR1"
MAGIC_ADMIN = b"ADM1"
MAGIC_ADMIN_REPLY = b"ADR1"

FIELD_REQUEST_ID = "cloudnic.request_id"
FIELD_NETNS = "cloudnic.netns"
FIELD_TIMEOUT_MS = "cloudnic.timeout_ms"
FIELD_SHIM_VERSION = "cloudnic.shim_version"

MAX_RESPONSE = 16 << 20  # what the shim accepts
MAX_FDS = 4  # ancillary room per recvmsg; extra descriptors are closed
_CHUNK = 256 << 10
_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">4sI")


class WireError(Exception):
    """A frame could not be read or decoded.

    ``kind`` is one of ``bad_magic``, ``too_large``, ``malformed``, ``eof``, ``timeout``,
    ``io`` (a socket error), ``unreachable`` (admin_call could not connect).
    """

    def __init__(self, kind: str, message: str, magic: bytes = b"") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.magic = magic  # the frame's magic when the header was read (too_large), else b""


@dataclass(frozen=True)
class Request:
    """A decoded CNI1 request. The caller owns ``netns_fd`` and must close it (see close())."""

    fields: dict[str, str]
    stdin: bytes
    netns_fd: int | None

    @property
    def env(self) -> dict[str, str]:
        """The CNI_* environment exactly as the runtime set it."""
        return {k: v for k, v in self.fields.items() if k.startswith("CNI_")}

    @property
    def request_id(self) -> str:
        return self.fields.get(FIELD_REQUEST_ID, "")

    @property
    def timeout_ms(self) -> int | None:
        """The shim's total timeout, or None when absent or not a positive integer."""
        value = self.fields.get(FIELD_TIMEOUT_MS, "")
        return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else None

    @property
    def netns_errno(self) -> int | None:
        """The errno of the shim's open(CNI_NETNS) when it failed, else None."""
        value = self.fields.get(FIELD_NETNS, "")
        if value.startswith("errno:") and value[6:].isascii() and value[6:].isdigit():
            return int(value[6:])
        return None

    def close(self) -> None:
        """Close the netns descriptor. Call it once, when the request is done."""
        if self.netns_fd is not None:
            os.close(self.netns_fd)


@dataclass(frozen=True)
class AdminRequest:
    """A decoded ADM1 frame: a JSON object with at least ``op``."""

    body: dict[str, Any]

    @property
    def op(self) -> str:
        op = self.body.get("op")
        return op if isinstance(op, str) else ""


@dataclass(frozen=True)
class Response:
    """A decoded CNR1 frame (what the shim relays)."""

    exit_code: int
    stdout: bytes
    stderr: bytes


# ---- encoding -------------------------------------------------------------------------


def _frame(magic: bytes, body: bytes) -> bytes:
    if len(body) > 0xFFFFFFFF:
        raise ValueError(f"frame body of {len(body)} bytes does not fit a u32 length")
    return _HEADER.pack(magic, len(body)) + body


def _blob(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def encode_request(fields: dict[str, str], stdin: bytes) -> bytes:
    """A CNI1 frame, byte for byte what the shim sends (without the fd)."""
    parts = [_U32.pack(len(fields))]
    for key, value in fields.items():
        parts += [_blob(key.encode()), _blob(value.encode())]
    parts.append(_blob(stdin))
    return _frame(MAGIC_REQUEST, b"".join(parts))


def encode_response(exit_code: int, stdout: bytes, stderr: bytes = b"") -> bytes:
    if not 0 <= exit_code <= 0xFFFFFFFF:
        raise ValueError(f"exit code {exit_code} is not a u32")
    return _frame(MAGIC_RESPONSE, _U32.pack(exit_code) + _blob(stdout) + _blob(stderr))


def decode_response(frame: bytes) -> Response:
    """Decode a whole CNR1 frame exactly as the shim does."""
    _magic, length = _header(frame[:8], {MAGIC_RESPONSE}, MAX_RESPONSE)
    body = frame[8:]
    if len(body) != length or length < 12:
        raise WireError("malformed", f"response body is {len(body)} bytes, header says {length}")
    out_len = _U32.unpack_from(body, 4)[0]
    if out_len > length - 12 or _U32.unpack_from(body, 8 + out_len)[0] != length - 12 - out_len:
        raise WireError("malformed", "response stdout/stderr lengths do not add up to the body length")
    return Response(_U32.unpack_from(body)[0], body[8 : 8 + out_len], body[12 + out_len :])


def encode_admin(obj: dict[str, Any]) -> bytes:
    return _frame(MAGIC_ADMIN, json.dumps(obj, separators=(",", ":")).encode())


def encode_admin_reply(obj: dict[str, Any]) -> bytes:
    return _frame(MAGIC_ADMIN_REPLY, json.dumps(obj, separators=(",", ":")).encode())


# ---- decoding -------------------------------------------------------------------------


def _header(data: bytes, magics: set[bytes], max_body: int) -> tuple[bytes, int]:
    if len(data) < 8:
        raise WireError("eof", f"frame header truncated after {len(data)} bytes")
    magic, length = _HEADER.unpack(data)
    if magic not in magics:
        want = " or ".join(sorted(m.decode() for m in magics))
        raise WireError("bad_magic", f"frame starts with {magic!r}, expected {want}")
    if length > max_body:
        raise WireError(
            "too_large", f"{magic.decode()} body of {length} bytes exceeds the limit of {max_body}", magic
        )
    return magic, length


def decode_admin(body: bytes) -> dict[str, Any]:
    """The JSON object of an ADM1/ADR1 body."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError("malformed", f"admin body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError("malformed", f"admin body must be a JSON object, not {type(obj).__name__}")
    return obj


def decode_request(body: bytes, netns_fd: int | None) -> Request:
    """Decode a CNI1 body. Does not close ``netns_fd`` on error (the caller does)."""
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if n > len(body) - pos:
            raise WireError("malformed", f"{what} of {n} bytes runs past the end of the body at offset {pos}")
        pos += n
        return body[pos - n : pos]

    def text(what: str, lenient: bool = False) -> str:
        raw = take(_U32.unpack(take(4, f"{what} length"))[0], what)
        try:
            return raw.decode("utf-8", "surrogateescape" if lenient else "strict")
        except UnicodeDecodeError:
            raise WireError("malformed", f"{what} {raw[:40]!r} is not valid UTF-8") from None

    count = _U32.unpack(take(4, "field count"))[0]
    if count > len(body) // 8:
        raise WireError("malformed", f"field count {count} is impossible in a body of {len(body)} bytes")
    fields: dict[str, str] = {}
    for i in range(count):
        # the runtime's CNI_* variables are bytes, not necessarily UTF-8: undecodable bytes are kept as
        # surrogates (os.fsdecode style) so that parse_env can refuse them naming the variable (code 4)
        key = text(f"field {i} key", lenient=True)
        cni = key.startswith("CNI_")
        if not cni and not key.isascii():
            raise WireError("malformed", f"field {i} key {key.encode(errors='surrogateescape')[:40]!r} is not "
                            "a CNI_* variable nor an ASCII cloudnic field")
        fields.setdefault(key, text(f"field {key!r} value", lenient=cni))  # first wins, like getenv()
    stdin = take(_U32.unpack(take(4, "stdin length"))[0], "stdin")
    if pos != len(body):
        raise WireError("malformed", f"{len(body) - pos} unexpected bytes after stdin")
    if fields.get(FIELD_NETNS) == "fd" and netns_fd is None:
        raise WireError("malformed", "cloudnic.netns is 'fd' but no descriptor arrived with the request")
    return Request(fields, stdin, netns_fd)


# ---- reading (agent side, on its request threads) ----------------------------------------


class _Reader:
    """Exact-size reads from a blocking stream socket under one deadline, collecting SCM_RIGHTS fds.
    Reads ahead (a frame's header and body usually come in one recvmsg); a connection carries
    one frame, so nothing read ahead belongs to anyone else."""

    def __init__(self, sock: socket.socket, deadline: float | None) -> None:
        self.sock, self.deadline = sock, deadline
        self.fds: list[int] = []
        self._ahead = bytearray()

    def exact(self, n: int) -> bytes:
        data = self._ahead
        while len(data) < n:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise WireError("timeout", "the peer did not send a complete frame in time")
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            try:
                chunk, anc, _flags, _addr = self.sock.recvmsg(
                    _CHUNK, socket.CMSG_SPACE(MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
                )
            except TimeoutError:
                raise WireError("timeout", "the peer did not send a complete frame in time") from None
            except InterruptedError:
                continue
            except OSError as exc:
                raise WireError("io", f"reading the frame failed: {os.strerror(exc.errno or 0)}") from None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    self.fds.extend(fds)
            if not chunk:
                raise WireError("eof", f"the peer closed the connection after {len(data)} of {n} bytes")
            data += chunk
        out = bytes(data[:n])
        del data[:n]
        return out

    def close_fds(self, keep: int | None = None) -> None:
        for fd in self.fds:
            if fd != keep:
                os.close(fd)
        self.fds = []


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def read_frame(sock: socket.socket, max_body: int, magics: set[bytes],
               timeout: float | None = None) -> tuple[bytes, bytes]:
    """Read one frame whose magic is in ``magics`` from a blocking socket; (magic, body). Closes any fds."""
    reader = _Reader(sock, _deadline(timeout))
    try:
        magic, length = _header(reader.exact(8), magics, max_body)
        return magic, reader.exact(length)
    finally:
        reader.close_fds()


def read_any(sock: socket.socket, max_body: int, timeout: float | None = None) -> Request | AdminRequest:
    """Read a CNI1 or ADM1 frame from a blocking socket (its timeout is used for the deadline).

    ``too_large`` is raised right after the header (the body is left unread) so the
    agent can still answer. Descriptors other than the request's netns fd are closed.
    """
    reader = _Reader(sock, _deadline(timeout))
    netns_fd: int | None = None
    try:
        magic, length = _header(reader.exact(8), {MAGIC_REQUEST, MAGIC_ADMIN}, max_body)
        body = reader.exact(length)
        if magic == MAGIC_ADMIN:
            return AdminRequest(decode_admin(body))
        netns_fd = reader.fds[0] if reader.fds else None
        return decode_request(body, netns_fd)
    except BaseException:
        netns_fd = None
        raise
    finally:
        reader.close_fds(keep=netns_fd)


def read_request(sock: socket.socket, max_body: int, timeout: float | None = None) -> Request:
    """Read a CNI1 request (an admin frame here is ``bad_magic``)."""
    frame = read_any(sock, max_body, timeout)
    if isinstance(frame, AdminRequest):
        raise WireError("bad_magic", "expected a CNI1 request, got an ADM1 admin frame")
    return frame


# ---- blocking client (CLI side) ----------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < n:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(min(n - len(data), _CHUNK))
        if not chunk:
            raise WireError("eof", f"the agent closed the connection after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def admin_call(socket_path: str, obj: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one admin request to the agent and return its JSON reply."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.settimeout(timeout)
            sock.connect(socket_path)
        except TimeoutError:
            raise WireError("timeout", f"connecting to the agent at {socket_path} timed out") from None
        except OSError as exc:
            raise WireError(
                "unreachable",
                f"cannot reach the agent at {socket_path}: {os.strerror(exc.errno or 0)}; "
                "is cloudnic-agent running?",
            ) from None
        try:
            sock.sendall(encode_admin(obj))
            _magic, length = _header(_recv_exact(sock, 8, deadline), {MAGIC_ADMIN_REPLY}, MAX_RESPONSE * 4)
            return decode_admin(_recv_exact(sock, length, deadline))
        except TimeoutError:
            raise WireError(
                "timeout", f"the agent at {socket_path} did not answer within {timeout} s"
            ) from None
        except OSError as exc:
            raise WireError("io", f"talking to the agent at {socket_path} failed: {exc}") from None
