"""Output paths that cannot be written: one clear, early error naming the argument.

A callback or a save that writes to a path nobody can create (below a regular
file, in a read-only directory) would otherwise fail with a bare
`NotADirectoryError`/`PermissionError` that names neither the argument nor
the callback, and often only after an epoch of training is lost. These
helpers run at the start (`on_train_begin`, the top of `save_checkpoint`, the
binary's startup checks) and raise the same `OSError` subclass, with its
`errno`, under a message that names the argument and the path:

    NotADirectoryError: TensorBoard: `log_dir` '/tmp/afile/logs' cannot be
    created: [Errno 20] Not a directory: '/tmp/afile'. Pass a directory that
    can be created and written.

`make_dirs` creates the directory (for writers that would create it anyway);
`check_creatable` only probes, creating nothing, for paths that are created
later or maybe never (a `ModelCheckpoint` that saves only on improvement, the
binary's `--model_dir` before the config is known to be good).
"""

from __future__ import annotations

import errno
import os
import posixpath

__all__ = [
    "named_os_error",
    "path_error",
    "make_dirs",
    "creatable_problem",
    "check_creatable",
    "is_url",
    "join",
    "parent",
    "basename",
]

_ACCEPTED = "Pass a directory that can be created and written."


def is_url(path: str) -> bool:
    """`gs://...`, `s3://...`: written through TensorFlow's file systems, not probed locally."""
    return "://" in str(path)


def join(directory: str, *names: str) -> str:
    """`directory/name...` for local paths and URLs alike (`gs://b/run` + `ckpt`).

    Plain string joining with "/": never `os.path.abspath`, which turns
    "gs://b/x" into "<cwd>/gs:/b/x".
    """
    return posixpath.join(os.fspath(directory), *names)


def parent(path: str) -> str:
    """The directory holding `path` ("." for a bare name); a URL keeps its scheme."""
    return posixpath.dirname(os.fspath(path).rstrip("/")) or "."


def basename(path: str) -> str:
    """The last component of `path` (trailing "/" ignored)."""
    return posixpath.basename(os.fspath(path).rstrip("/"))


def _subject(argument: str, path: str, owner: str | None) -> str:
    prefix = f"{owner}: " if owner else ""
    return f"{prefix}`{argument}` {path!r}"


def named_os_error(code: int | None, message: str) -> OSError:
    """An OSError with `message` as its text, of the subclass that `code` maps to
    (ENOTDIR: NotADirectoryError, EACCES: PermissionError, ...) and with that errno,
    so callers can still catch the specific type."""
    cls = type(OSError(code, os.strerror(code))) if code is not None else OSError
    error = cls(message)
    error.errno = code  # str() stays `message`: no strerror or filename is set
    return error


def path_error(
    error: BaseException | str,
    argument: str,
    path: str,
    *,
    action: str = "be created",
    owner: str | None = None,
    accepted: str = _ACCEPTED,
) -> OSError:
    """The named error for `path` (the value of `argument`) that cannot `action`:
    `error`'s OSError subclass and errno (a TensorFlow file-system error or a
    plain reason gives an `OSError`), its text after the argument and path."""
    if isinstance(error, OSError):
        code = error.errno
    else:
        code = _errno_of(error) if isinstance(error, BaseException) else None
    reason = getattr(error, "message", None) or str(error)
    if code is not None and not isinstance(error, OSError):
        reason = f"[Errno {code}] {os.strerror(code)}: {reason}"  # as an OSError reads
    return named_os_error(
        code, f"{_subject(argument, path, owner)} cannot {action}: {reason}. {accepted}"
    )


def make_dirs(
    directory: str, argument: str, *, path: str | None = None, owner: str | None = None
) -> None:
    """Creates `directory` (and its parents) and checks it is writable, or raises
    the named OSError.

    `argument` is the user's argument name (`log_dir`), `path` the value they
    passed when it differs from `directory` (a file inside it), `owner` the
    callback, for the message.
    """
    import tensorflow as tf

    shown = directory if path is None else path
    try:
        tf.io.gfile.makedirs(directory)
    except tf.errors.OpError as e:
        raise path_error(e, argument, shown, owner=owner) from e
    # A local permission probe (TensorFlow's file systems have none); URLs are
    # checked by the first write, whose error names the path.
    if not is_url(directory) and not os.access(directory, os.W_OK | os.X_OK):
        reason = f"{directory!r} is not a writable directory"
        raise named_os_error(
            errno.EACCES,
            f"{_subject(argument, shown, owner)} cannot be written: {reason}. {_ACCEPTED}",
        )


def _errno_of(error: BaseException) -> int | None:
    """The errno a TensorFlow file-system error stands for, so callers can still
    catch `NotADirectoryError`/`PermissionError` as with the os module."""
    import tensorflow as tf

    if isinstance(error, tf.errors.PermissionDeniedError):
        return errno.EACCES
    if isinstance(error, tf.errors.AlreadyExistsError):
        return errno.EEXIST
    if "not a directory" in str(getattr(error, "message", error)).lower():
        return errno.ENOTDIR
    return None


def creatable_problem(directory: str) -> tuple[int, str] | None:
    """`(errno, reason)` when `directory` can neither be created nor written, else None.

    Looks at the nearest existing ancestor (the directory itself when it
    exists): it must be a directory that this process may write to and
    enter. Creates nothing. The walk goes through `tf.io.gfile`; permission
    bits are a local notion, checked with `os.access` (so root, who ignores
    them, only fails on a path below a regular file). URLs are not probed:
    their first write names the path.
    """
    if is_url(directory):
        return None
    import tensorflow as tf

    target = os.fspath(directory)
    ancestor = target
    while not tf.io.gfile.exists(ancestor):
        up = parent(ancestor)
        if up == ancestor:
            break
        ancestor = up
    if not tf.io.gfile.isdir(ancestor):
        if ancestor == target:
            return errno.ENOTDIR, "it exists and is not a directory"
        return errno.ENOTDIR, f"{ancestor!r} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        where = "it is" if ancestor == target else f"{ancestor!r} is"
        return errno.EACCES, f"{where} not a writable directory"
    return None


def check_creatable(
    directory: str, argument: str, *, path: str | None = None, owner: str | None = None
) -> None:
    """Raises the named OSError (NotADirectoryError, PermissionError) when
    `directory` can neither be created nor written; see `creatable_problem`."""
    problem = creatable_problem(directory)
    if problem is not None:
        code, reason = problem
        shown = directory if path is None else path
        raise named_os_error(
            code,
            f"{_subject(argument, shown, owner)} cannot be created or written: {reason}. "
            f"{_ACCEPTED}",
        )
