"""Exec a CNI plugin the way a runtime does: fork+exec with env and stdin, wall time per call.

containerd, CRI-O and podman all run a plugin as a child process with the ``CNI_*``
environment, the config on stdin and stdout/stderr captured, then wait for it. This does
the same with ``posix_spawn`` (vfork+exec in glibc) for every plugin alike and reaps
the child with ``os.wait4``.

Peak RSS needs care: at ``execve`` the kernel folds the *old* address space's high-water
mark into the child's ``ru_maxrss``, and a child of this Python process starts out with
Python's ~40 MB. So the RSS figure comes from :func:`peak_rss_kb`, which runs the plugin
under GNU time: its own small process (under 1 MB) is the parent whose address space
the plugin replaces, so the figure is an upper bound within a fraction of a MB. ``ru_maxrss`` covers the
plugin and the children it waited for (the bridge plugin's host-local).
"""

from __future__ import annotations

import os
import select
import tempfile
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Exec:
    """One finished plugin call."""

    rc: int
    stdout: bytes
    stderr: bytes
    wall_ms: float
    maxrss_kb: int       # includes this (Python) parent's RSS: see the module doc
    cpu_ms: float = 0.0  # user + system CPU of the plugin and the children it waited for

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def error(self) -> str:
        """A one-line description of a failed call for the report."""
        text = (self.stdout or self.stderr).decode(errors="replace").strip().replace("\n", " ")
        return f"exit {self.rc}: {text[:300]}"


def run_plugin(path: str, env: dict[str, str], stdin: bytes, timeout_s: float = 60.0,
               argv: list[str] | None = None) -> Exec:
    """Run ``path`` with exactly ``env`` and ``stdin``; never raises for a plugin failure."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions = [
        (os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2),
    ]
    t0 = time.perf_counter()
    try:
        pid = os.posix_spawn(path, argv or [path], env, file_actions=actions)
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    try:
        out, err = _communicate(in_w, out_r, err_r, stdin, t0 + timeout_s, pid)
    finally:
        os.close(out_r)
        os.close(err_r)
    _, status, ru = os.wait4(pid, 0)
    wall = (time.perf_counter() - t0) * 1000.0
    rc = os.waitstatus_to_exitcode(status)
    return Exec(rc=rc, stdout=out, stderr=err, wall_ms=wall, maxrss_kb=int(ru.ru_maxrss),
                cpu_ms=(ru.ru_utime + ru.ru_stime) * 1000.0)


def _communicate(in_w: int, out_r: int, err_r: int, data: bytes, deadline: float,
                 pid: int) -> tuple[bytes, bytes]:
    """Feed stdin and drain stdout/stderr without deadlocking; kill the child at the deadline.

    Closes ``in_w`` exactly once, also on error: other threads reuse fd numbers.
    """
    stdin_open = True

    def close_stdin() -> None:
        nonlocal stdin_open
        if stdin_open:
            stdin_open = False
            os.close(in_w)

    bufs: dict[int, list[bytes]] = {out_r: [], err_r: []}
    poller = select.poll()
    poller.register(out_r, select.POLLIN)
    poller.register(err_r, select.POLLIN)
    pending = memoryview(data)
    try:
        if pending:
            poller.register(in_w, select.POLLOUT)
        else:
            close_stdin()
        open_fds = 2
        while open_fds:
            left = deadline - time.perf_counter()
            if left <= 0:
                os.kill(pid, 9)
                break
            for fd, ev in poller.poll(left * 1000):
                if fd == in_w and stdin_open:
                    try:
                        n = os.write(in_w, pending[:65536])
                        pending = pending[n:]
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        poller.unregister(in_w)
                        close_stdin()
                    continue
                chunk = os.read(fd, 65536) if ev & (select.POLLIN | select.POLLHUP | select.POLLERR) else b""
                if chunk:
                    bufs[fd].append(chunk)
                else:
                    poller.unregister(fd)
                    open_fds -= 1
    finally:
        close_stdin()
    return b"".join(bufs[out_r]), b"".join(bufs[err_r])


GNU_TIME = "/usr/bin/time"


def peak_rss_kb(path: str, env: dict[str, str], stdin: bytes) -> tuple[Exec, int]:
    """Run the plugin under GNU time; (the call, its peak RSS in kB as time's wait4 saw it)."""
    with tempfile.NamedTemporaryFile(prefix="cnb-rss-", mode="r") as f:
        ex = run_plugin(GNU_TIME, env, stdin, argv=[GNU_TIME, "-f", "%M", "-o", f.name, path])
        text = f.read().strip().splitlines()
    return ex, int(text[-1]) if text and text[-1].isdigit() else -1
