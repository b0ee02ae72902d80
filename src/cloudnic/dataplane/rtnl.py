"""A raw NETLINK_ROUTE socket: requests with acks, batches of requests in one send, dumps.

Why our own: a general netlink library's synchronous API cost ~1 ms of Python per
request against ~0.02 ms of kernel work, ~200 ms of import and ~13 MB of RSS (issue 4).
The messages are packed by ``links.py`` / ``rtmsg.py``; this module only moves them.

* ``request(req)``: one message with ``NLM_F_ACK``; returns the payloads of the replies
  (a "get" answers with one message, then the ack).
* ``batch(reqs)``: several messages in ONE ``send``, each with its own sequence number
  and ``NLM_F_ACK``; every ack is awaited. The kernel runs them in order and goes on after
  a failed one, so the first failure (in message order) is raised as :class:`KernelError`
  naming *which* request failed (``Request.what``) and its position.
* ``dump(req)``: ``NLM_F_DUMP`` until ``NLMSG_DONE``, over as many datagrams as it takes;
  redone (up to 3 times) when the kernel flags it interrupted (``NLM_F_DUMP_INTR``).

The socket sets ``NETLINK_GET_STRICT_CHK`` (the kernel then filters address dumps by
``ifa_index``, route dumps by table and ``RTA_OIF``, link dumps by master/kind, instead of
dumping the netns), ``NETLINK_EXT_ACK`` (the kernel's own error text, added to the error)
and ``NETLINK_CAP_ACK`` (acks do not echo the request). Replies are matched by sequence
number; anything else (a late answer to a timed-out request) is dropped. A receive waits
at most ``timeout`` seconds: a hung kernel request raises ``ETIMEDOUT`` and the socket is
marked ``broken`` (the owner discards it). ``EINTR`` is retried by Python (PEP 475);
``ENOBUFS`` and other socket errors are raised as ``OSError`` and also mark it broken.

The socket is a plain fd, not bound to a thread; one request runs at a time on it (the
caller serializes: sandbox sockets are per call, host sockets per thread).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cloudnic.dataplane import nlattr
from cloudnic.dataplane.nlattr import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_OVERRUN,
)

SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
NLMSGERR_ATTR_MSG = 1
NLM_F_ACK_TLVS = 0x200
DEFAULT_TIMEOUT = 10.0
RECV_SIZE = 1 << 16
DUMP_TRIES = 3

HDR = struct.Struct("=IHHII")
_err = struct.Struct("=i")


@dataclass(frozen=True)
class Request:
    """One rtnetlink message to send: type, flags (REQUEST/ACK are added), body, and what it does."""

    type: int
    flags: int
    body: bytes
    what: str = ""


class KernelError(OSError):
    """The kernel refused a request: its errno, which request (``what``, ``position`` in a batch)."""

    def __init__(self, code: int, what: str = "", position: int = 0, kernel_says: str = "") -> None:
        super().__init__(code, os.strerror(code))
        self.what = what
        self.position = position
        self.kernel_says = kernel_says

    @property
    def code(self) -> int:
        return int(self.errno or 0)


@dataclass
class _Pending:
    seq: int
    what: str
    position: int
    dump: bool
    replies: list[tuple[int, bytes]]
    error: KernelError | None = None
    interrupted: bool = False
    done: bool = False


def _error_text(data: bytes, off: int, length: int, flags: int) -> str:
    """The kernel's extended-ack message of an ``NLMSG_ERROR``, if it sent one."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    inner_len = HDR.unpack_from(data, off + HDR.size + 4)[0]
    start = off + HDR.size + 4 + (HDR.size if flags & 0x100 else (inner_len + 3) & ~3)   # NLM_F_CAPPED
    return nlattr.get_str(nlattr.parse(data, start, off + length), NLMSGERR_ATTR_MSG)


class RtnlSocket:
    """One bound NETLINK_ROUTE socket (created in the netns it serves: see ``netns.py``)."""

    def __init__(self, sock: socket.socket | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            for opt in (NETLINK_GET_STRICT_CHK, NETLINK_EXT_ACK, NETLINK_CAP_ACK):
                self.sock.setsockopt(SOL_NETLINK, opt, 1)
            self.sock.bind((0, 0))
            self.sock.settimeout(timeout)
        except OSError:
            self.sock.close()
            raise
        self._seq = 0
        self._buf = bytearray(RECV_SIZE)
        self.broken = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    # ---- the three ways to talk ----------------------------------------------------------

    def request(self, req: Request) -> list[bytes]:
        """Send ``req`` with an ack; the payloads of its replies (raises :class:`KernelError`)."""
        (p,) = self._exchange([req], dump=False)
        return [payload for _, payload in p.replies]

    def batch(self, reqs: Sequence[Request]) -> None:
        """Send all of ``reqs`` in one datagram; wait for every ack; raise the first failure."""
        if reqs:
            self._exchange(reqs, dump=False)

    def dump(self, req: Request) -> list[tuple[int, bytes]]:
        """(type, payload) of every message a dump request returns."""
        for _ in range(DUMP_TRIES - 1):
            (p,) = self._exchange([req], dump=True)
            if not p.interrupted:
                return p.replies
        return self._exchange([req], dump=True)[0].replies

    # ---- the machinery ---------------------------------------------------------------------

    def _exchange(self, reqs: Sequence[Request], *, dump: bool) -> list[_Pending]:
        out, pending = bytearray(), {}
        for i, r in enumerate(reqs):
            self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
            flags = r.flags | NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
            out += HDR.pack(HDR.size + len(r.body), r.type, flags, self._seq, 0) + r.body
            pending[self._seq] = _Pending(self._seq, r.what, i, dump, [])
        try:
            self.sock.send(out)
            waiting = len(pending)
            while waiting:
                waiting -= self._receive(pending)
        except TimeoutError as e:
            self.broken = True
            raise OSError(errno.ETIMEDOUT, "no answer from the kernel in time") from e
        except KernelError:
            raise
        except OSError:
            self.broken = True
            raise
        ordered = sorted(pending.values(), key=lambda p: p.position)
        for p in ordered:
            if p.error is not None:
                raise p.error
        return ordered

    def _receive(self, pending: dict[int, _Pending]) -> int:
        """Read one datagram; file its messages; how many requests it completed."""
        n = self.sock.recv_into(self._buf, RECV_SIZE, socket.MSG_TRUNC)
        if n > RECV_SIZE:
            raise OSError(errno.EMSGSIZE, f"a netlink reply of {n} bytes did not fit the receive buffer")
        data = bytes(self._buf[:n])
        finished, off = 0, 0
        while off + HDR.size <= n:
            length, kind, flags, seq, _pid = HDR.unpack_from(data, off)
            if length < HDR.size:
                break
            p = pending.get(seq)
            if p is not None and not p.done:
                finished += self._file(p, data, off, length, kind, flags)
            off += (length + 3) & ~3
        return finished

    def _file(self, p: _Pending, data: bytes, off: int, length: int, kind: int, flags: int) -> int:
        body = off + HDR.size
        if kind == NLMSG_ERROR:
            code = -_err.unpack_from(data, body)[0]
            if code:
                p.error = KernelError(code, p.what, p.position, _error_text(data, off, length, flags))
            p.done = True
            return 1
        if kind == NLMSG_DONE:
            code = -_err.unpack_from(data, body)[0] if length >= HDR.size + 4 else 0
            if code > 0:
                p.error = KernelError(code, p.what, p.position, _error_text(data, off, length, flags))
            p.done = True
            return 1
        if kind == NLMSG_OVERRUN:
            raise OSError(errno.ENOBUFS, "netlink overrun")
        if flags & NLM_F_DUMP_INTR:
            p.interrupted = True
        p.replies.append((kind, data[body:off + length]))
        return 0
