"""Network namespaces: netlink sockets bound to a netns, net sysctls, the host handle.

How a socket gets into another netns. The *calling thread* enters the target netns with
``setns(2)``, creates a bare ``AF_NETLINK`` socket (a netlink socket belongs to the netns
it was created in, for its whole life), and returns to its own netns at once; the socket
is then set up (:class:`cloudnic.dataplane.rtnl.RtnlSocket`) outside the target netns.
Only one syscall runs inside the foreign netns, so nothing else (logging, DNS) can happen
there. The same window opens ``/proc/sys/net/...`` files: the net sysctl tree a file
belongs to is fixed when it is opened, by the opener's netns.

Poisoned threads. If ``setns`` back to the thread's own netns fails, the thread is left
in a foreign netns: it is marked *poisoned* (thread-local), ``NetnsPoisoned`` is raised,
and every later netns operation on that thread refuses to run. To make sure the thread
never runs anything again (a provider HTTP call would leave from the wrong netns), run
dataplane calls on :class:`cloudnic.dataplane.executor.NetnsSafeExecutor`, which retires
a worker thread as soon as a task leaves it poisoned. ``thread_poisoned()`` lets any
other executor do the same.

Sockets are plain fds, not bound to a thread, but one request runs at a time on each:
sandbox sockets are per call (opened, used and closed by one plug/check/unplug) and host
sockets are cached per thread by :class:`NetnsHandle`, so no lock is ever held across a
kernel request.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import socket
import threading
from collections.abc import Iterator

from cloudnic.dataplane.rtnl import RtnlSocket
from cloudnic.errors import DataplaneError, InternalError, InvalidEnvironment, from_errno

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
NSFS_MAGIC = 0x6E736673
NS_GET_NSTYPE = 0xB703            # _IO(0xb7, 0x3), Linux >= 4.11
NETLINK_ROUTE = 0
SELF_NETNS = "/proc/thread-self/ns/net"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int
_state = threading.local()


class NetnsPoisoned(InternalError):
    """This thread could not return to its own netns; it must never be used again."""


def thread_poisoned() -> bool:
    """True when the calling thread is stuck in a foreign netns (see the module doc)."""
    return bool(getattr(_state, "poisoned", False))


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_id(fd: int) -> tuple[int, int]:
    """(st_dev, st_ino) of a netns fd: equal ids mean the same netns."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _current_id() -> tuple[int, int]:
    st = os.stat(SELF_NETNS)
    return st.st_dev, st.st_ino


def is_netns_fd(fd: int) -> bool:
    """True when ``fd`` is an open descriptor of a network namespace."""
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


@contextlib.contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the body with the calling thread inside the netns ``fd``; always return after.

    Keep the body to a syscall or two: the thread serves nothing else meanwhile, but
    anything it does lands in the target netns.
    """
    if thread_poisoned():
        raise NetnsPoisoned("this worker thread is stuck in a foreign network namespace and may not be "
                            "reused; the agent must retire it")
    home = os.open(SELF_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(fd)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EBADF):
                raise InvalidEnvironment(f"file descriptor {fd} is not an open network namespace "
                                         "(check CNI_NETNS / agent.host_netns)", e.strerror or "") from e
            raise DataplaneError(f"cannot enter the network namespace of fd {fd}", e.strerror or "") from e
        try:
            yield
        finally:
            try:
                _setns(home)
            except OSError as e:
                _state.poisoned = True
                log.critical("worker thread %s poisoned: cannot return to its netns (%s)",
                             threading.current_thread().name, e)
                raise NetnsPoisoned("cannot return the worker thread to its own network namespace; the "
                                    "thread is retired, retry the operation", e.strerror or "") from e
    finally:
        os.close(home)


def netns_socket(fd: int) -> RtnlSocket:
    """A rtnetlink socket that lives in the netns ``fd``. Close it when done."""
    if thread_poisoned():
        raise NetnsPoisoned("this worker thread is stuck in a foreign network namespace")
    try:
        same = netns_id(fd) == _current_id()
    except OSError as e:
        raise InvalidEnvironment(f"file descriptor {fd} is not an open network namespace",
                                 e.strerror or "") from e
    try:
        if same:
            return RtnlSocket()
        with entered(fd):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        return RtnlSocket(sock)
    except OSError as e:
        raise from_errno(e.errno or 0, f"opening a netlink socket in netns fd {fd}") from e


def _sysctl_path(path: str) -> str:
    rel = path.strip("/")
    if rel.startswith("proc/sys/"):
        rel = rel[len("proc/sys/"):]
    if not rel.startswith("net/") or ".." in rel.split("/"):
        raise InternalError(f"sysctl {path!r}: only net/... sysctls follow the network namespace")
    return "/proc/sys/" + rel


def _open_in(fd: int, path: str, flags: int) -> int:
    full = _sysctl_path(path)
    try:
        with entered(fd):
            return os.open(full, flags | os.O_CLOEXEC)
    except OSError as e:
        raise DataplaneError(f"sysctl {full} in netns fd {fd}: cannot open", e.strerror or "") from e


def sysctl_set(netns_fd: int, path: str, value: str) -> None:
    """Write ``value`` to the net sysctl ``path`` ("net/ipv4/ip_forward") of a netns."""
    f = _open_in(netns_fd, path, os.O_WRONLY)
    try:
        os.write(f, value.encode())
    except OSError as e:
        raise DataplaneError(f"sysctl {path} = {value!r}: the kernel refused it", e.strerror or "") from e
    finally:
        os.close(f)


def sysctl_get(netns_fd: int, path: str) -> str:
    """The value of the net sysctl ``path`` of a netns, stripped."""
    f = _open_in(netns_fd, path, os.O_RDONLY)
    try:
        return os.read(f, 4096).decode().strip()
    finally:
        os.close(f)


class NetnsHandle:
    """An owned descriptor of one netns (the "host") and its per-thread socket cache.

    ``fd=None`` means the process's netns at construction. The caller keeps ownership of
    a given fd: the handle works on a duplicate and closes only that.
    """

    def __init__(self, fd: int | None) -> None:
        try:
            self.fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC) if fd is None \
                else os.dup(fd)
        except OSError as e:
            raise InvalidEnvironment(f"host netns fd {fd}: cannot open it", e.strerror or "") from e
        os.set_inheritable(self.fd, False)
        if not is_netns_fd(self.fd):
            os.close(self.fd)
            raise InvalidEnvironment(f"host netns fd {fd} is not a network namespace")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[RtnlSocket] = []
        self._closed = False

    def socket(self) -> RtnlSocket:
        """This thread's socket in the netns (opened on first use)."""
        sock: RtnlSocket | None = getattr(self._local, "sock", None)
        if sock is not None:
            return sock
        sock = netns_socket(self.fd)
        with self._lock:
            if self._closed:
                sock.close()
                raise DataplaneError("the dataplane is closed; the agent is shutting down")
            self._open.append(sock)
        self._local.sock = sock
        return sock

    def discard(self) -> None:
        """Drop this thread's socket (after a socket-level error); the next call opens anew."""
        sock = getattr(self._local, "sock", None)
        if sock is None:
            return
        self._local.sock = None
        with self._lock:
            self._open = [s for s in self._open if s is not sock]
        sock.close()

    def sysctl_set(self, path: str, value: str) -> None:
        sysctl_set(self.fd, path, value)

    def sysctl_get(self, path: str) -> str:
        return sysctl_get(self.fd, path)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sockets, self._open = self._open, []
        for sock in sockets:
            sock.close()
        os.close(self.fd)
