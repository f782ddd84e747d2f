"""A lease on `model_dir`, so two trainers never write one run directory at once.

Two `tfk-train` runs on one `model_dir` would mix their checkpoints and
overwrite each other's backup; on `gs://` there is no file lock to take.
So the chief of a training run holds a *lease*: the file
`model_dir/LEASE` (JSON: host, pid, a random token, when it was taken and
when it was last refreshed, and its timeout), written through `tf.io.gfile`
(any file system, `gs://` included) and refreshed by a background thread
every quarter of the timeout.

A second trainer that finds a live lease fails at once (exit status 5,
`EXIT_LOCKED`) with an error naming the holder. A lease is *stale*, and is
taken over with a warning, when it has not been refreshed for its timeout
(the holder died without releasing it: SIGKILL, a lost VM), or at once when
its holder is a process on this host that no longer exists (a local crash
and rerun need not wait). `--force_unlock` takes over a live lease: use it
only when you know the holder is gone.

Object stores have no "create if absent": a trainer writes its lease, waits
`SETTLE_SECONDS` and reads it back; if another token is there, the other
trainer won and this one fails. Two trainers starting within the same few
hundred milliseconds can in principle both miss each other; the lease is a
guard against the common mistake (a second run started on a busy
directory), not a consensus protocol. Lease times are wall-clock times of
the writing host, so hosts should keep their clocks in sync (NTP).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any

import tensorflow as tf
from absl import logging

LEASE_FILE = "LEASE"
DEFAULT_TIMEOUT = 300.0  # seconds without a refresh after which a lease is stale
SETTLE_SECONDS = 0.5  # between writing the lease and reading it back


class LeaseHeld(Exception):
    """Another live trainer holds the lease of `model_dir` (exit status 5)."""


def lease_path(model_dir: str) -> str:
    return os.path.join(model_dir, LEASE_FILE)


def read(model_dir: str) -> dict[str, Any] | None:
    """The lease in `model_dir` (None when there is none; `{}` when unreadable)."""
    try:
        with tf.io.gfile.GFile(lease_path(model_dir)) as f:
            text = f.read()
    except (tf.errors.NotFoundError, tf.errors.FailedPreconditionError):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _pid_gone(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, TypeError):
        return False  # exists (another user's process) or unknown: assume alive
    return False


def why_stale(lease: dict[str, Any], now: float | None = None) -> str | None:
    """Why `lease` no longer protects anything (a reason to take it over), or None
    when its holder looks alive."""
    now = time.time() if now is None else now
    if not lease:
        return "the lease file is unreadable"
    if lease.get("host") == socket.gethostname() and _pid_gone(lease.get("pid")):
        return f"its process {lease.get('pid')} no longer exists on this host"
    try:
        age = now - float(lease.get("refreshed", 0))
        timeout = float(lease.get("timeout", DEFAULT_TIMEOUT))
    except (TypeError, ValueError):
        return "the lease file is malformed"
    if age > timeout:
        return f"it was last refreshed {age:.0f}s ago (timeout {timeout:g}s)"
    return None


def describe(lease: dict[str, Any]) -> str:
    """`host 'vm-1', pid 1234, since 2026-12-02 19:00:00 UTC, refreshed 12s ago`."""
    since = lease.get("acquired")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(since)))
        if isinstance(since, (int, float))
        else "?"
    )
    refreshed = lease.get("refreshed")
    ago = f"{time.time() - refreshed:.0f}s ago" if isinstance(refreshed, (int, float)) else "?"
    return f"host {lease.get('host')!r}, pid {lease.get('pid')}, since {when}, refreshed {ago}"


def held_message(model_dir: str, lease: dict[str, Any]) -> str:
    return (
        f"--model_dir {model_dir!r} is in use by another trainer ({describe(lease)}; "
        f"lease file {lease_path(model_dir)!r}). Wait for it to finish, use another "
        "--model_dir, or, if that trainer is gone, rerun with --force_unlock (a lease "
        f"not refreshed for {float(lease.get('timeout', DEFAULT_TIMEOUT)):g}s is taken "
        "over without it)."
    )


def check_free(model_dir: str, force: bool = False) -> None:
    """Raises `LeaseHeld` when a live trainer holds `model_dir` (creates nothing)."""
    lease = read(model_dir)
    if lease is not None and not force and why_stale(lease) is None:
        raise LeaseHeld(held_message(model_dir, lease))


class Lease:
    """The lease this trainer holds: `acquire()`, refreshed in the background, `release()`."""

    def __init__(self, model_dir: str, timeout: float = DEFAULT_TIMEOUT):
        self.model_dir = model_dir
        self.timeout = float(timeout)
        self.token = uuid.uuid4().hex
        self.acquired = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None  # why the lease was lost (taken over), if it was

    def _record(self) -> dict[str, Any]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": self.token,
            "acquired": self.acquired,
            "refreshed": time.time(),
            "timeout": self.timeout,
        }

    def _write(self) -> None:
        # Under a name of our own, then renamed over the lease: a reader never sees a
        # half-written lease (and some file systems, ram:// among them, append when
        # an existing file is opened for writing).
        path = lease_path(self.model_dir)
        tmp = f"{path}.tmp-{self.token}"
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(json.dumps(self._record(), indent=2))
        tf.io.gfile.rename(tmp, path, overwrite=True)

    def acquire(self, force: bool = False) -> Lease:
        """Takes the lease (a stale one with a warning; a live one only with `force`),
        or raises `LeaseHeld` naming the holder."""
        tf.io.gfile.makedirs(self.model_dir)
        lease = read(self.model_dir)
        if lease is not None:
            reason = why_stale(lease)
            if reason is None and not force:
                raise LeaseHeld(held_message(self.model_dir, lease))
            logging.warning(
                "Taking over the lease of %s (%s): %s.",
                self.model_dir,
                describe(lease),
                reason or "--force_unlock",
            )
            print(
                f"tfk-train: taking over the lease of {self.model_dir} held by "
                f"{describe(lease)}: {reason or '--force_unlock'}.",
                flush=True,
            )
        self._write()
        time.sleep(SETTLE_SECONDS)
        now = read(self.model_dir)
        if not now or now.get("token") != self.token:
            raise LeaseHeld(held_message(self.model_dir, now or {}))
        self._thread = threading.Thread(target=self._refresh_loop, name="tfk-lease", daemon=True)
        self._thread.start()
        return self

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.timeout / 4):
            current = read(self.model_dir)
            if not current or current.get("token") != self.token:
                self.lost = f"taken over by {describe(current or {})}"
                logging.error("The lease of %s was %s.", self.model_dir, self.lost)
                return
            try:
                self._write()
            except tf.errors.OpError as e:  # a transient store error: retry next round
                logging.warning("Refreshing the lease of %s failed: %s", self.model_dir, e)

    def release(self) -> None:
        """Stops refreshing and deletes the lease file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = read(self.model_dir)
        if current and current.get("token") == self.token:
            tf.io.gfile.remove(lease_path(self.model_dir))
