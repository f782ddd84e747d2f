"""Checkpoints: what is saved, where, and how a write can never corrupt the last one.

A checkpoint holds the network, the optimizer (slots, iteration count) and,
for backups, the metric states and the training position. It is a TF
object-based checkpoint (`tf.train.Checkpoint`), so it restores across
strategies: saved on 4 replicas, restored on 1, and back. Only tensors and
TensorFlow's own index are written: no Python objects are serialised.

Every path goes through `tf.io.gfile` or TensorFlow's checkpoint API, so it
may be `gs://` (or `ram://` in tests). Object stores have no atomic rename
(a rename is a copy), so overwrites are published, not renamed into place
(docs/reliability.md, "Durable writes"): a save to a prefix that already
holds a checkpoint writes the new one under a unique name
(`<prefix>.tfk-<id>`), then writes the small pointer file
`<prefix>.checkpoint` (TensorFlow's `checkpoint` state-file format) last, and
deletes the old files only after that. Readers follow the pointer. A kill
at any point leaves either the old or the new checkpoint complete and
pointed at.

Reads never start over silently: a checkpoint that cannot be read (missing
index, flipped bytes, a garbage state file) is skipped for the newest intact
one with a warning naming the damaged files; when none is intact the error
names the directory, and nothing unreadable is deleted.

Only the chief worker writes to the real directory; the other workers of a
multi-worker cluster must join every save (variables are read
collectively), and write to a private, machine-local scratch directory
instead (never the user's path).
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfk_trainer import distribute, paths

log = logging.getLogger("tfk_trainer")

POINTER_SUFFIX = ".checkpoint"  # `<prefix>.checkpoint`: which files hold `<prefix>`
STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's state file in a directory
_UNIQUE = re.compile(r"\.tfk-[0-9a-f]{12}$")
_NUMBER = re.compile(r"-(\d+)$")


class DamagedCheckpointError(ValueError):
    """No intact checkpoint where one was expected; the message names the damaged
    files and the directory (a `ValueError`, like every restore failure)."""


class UnreadableCheckpoint(DamagedCheckpointError):
    """One checkpoint whose files cannot be read (missing, truncated, corrupt); the
    message names the files, the TensorFlow error is its `__cause__`."""


def checkpoint_items(model: Any, *, include_optimizer: bool = True) -> dict[str, Any]:
    """The trackable objects of a model's checkpoint."""
    items: dict[str, Any] = {"model": model.network if model.network is not None else model}
    # Random-number state (Keras SeedGenerators behind Dropout and friends) is a
    # layer variable that Keras's object graph does not save; list it explicitly
    # so a resumed run draws the same dropout masks as an uninterrupted one.
    rng = [
        v for v in model.non_trainable_variables if "seed_generator" in getattr(v, "path", v.name)
    ]
    if rng:
        items["rng_state"] = rng
    if include_optimizer and model.optimizer is not None:
        items["optimizer"] = model.optimizer
    return items


def write_directory(directory: str, strategy: tf.distribute.Strategy | None = None) -> str:
    """`directory` on the chief; a private scratch directory on other workers.

    The scratch directory is machine-local and thrown away after the save
    (`cleanup_worker_directory`): a non-chief worker's copy is never wanted,
    so it is never written to the user's (possibly remote) path.
    """
    if distribute.is_chief(strategy):
        return directory
    return tempfile.mkdtemp(prefix="tfk_worker_ckpt_")


def cleanup_worker_directory(written: str, directory: str) -> None:
    """Removes a non-chief worker's scratch directory (nothing on the chief)."""
    if written != directory:
        remove_tree(written)


def remove_tree(directory: str) -> None:
    """Deletes `directory` and its contents through `tf.io.gfile` (gone already: fine)."""
    try:
        if tf.io.gfile.exists(directory):
            tf.io.gfile.rmtree(directory)
    except tf.errors.NotFoundError:
        pass


def prepare_for_restore(model: Any) -> None:
    """Builds the optimizer's slots so a restore fills them (Keras variables are not
    created lazily from a checkpoint)."""
    if model.optimizer is not None and not model.optimizer.built:
        variables = model.trainable_variables
        if variables:
            with model.distribute_strategy.scope():
                model.optimizer.build(variables)


# -- the files of a checkpoint and the pointer -------------------------------------


def checkpoint_files(prefix: str) -> list[str]:
    """The files that make up the checkpoint `prefix` (its `.index` and `.data-*`)."""
    found = tf.io.gfile.glob(_glob_escape(prefix) + ".data-*")
    if tf.io.gfile.exists(prefix + ".index"):
        found.append(prefix + ".index")
    return sorted(found)


def _glob_escape(path: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", path)


def _delete_checkpoint(prefix: str) -> None:
    for name in checkpoint_files(prefix):
        try:
            tf.io.gfile.remove(name)
        except tf.errors.NotFoundError:
            pass


def pointer_path(prefix: str) -> str:
    """The pointer file that says which files hold the checkpoint `prefix`."""
    return prefix + POINTER_SUFFIX


class _UnreadableState(Exception):
    pass


_STATE_LINE = re.compile(r'^\s*(model_checkpoint_path|all_model_checkpoint_paths)\s*:\s*"(.*)"\s*$')
_STATE_OTHER = re.compile(
    r"^\s*(all_model_checkpoint_timestamps|last_preserved_timestamp)\s*:\s*[0-9.eE+-]+\s*$"
)


def read_state(path: str, times: dict[str, float] | None = None) -> list[str] | None:
    """The checkpoint prefixes a state file (TensorFlow's `checkpoint` text format,
    or one of our pointers) lists, oldest first and its current one last.

    None when there is no such file; raises `_UnreadableState` when it exists
    but is not a state file (garbage, truncated, binary). `times`, if given,
    receives the save time (seconds) the file records for each prefix: it
    orders checkpoints where file times cannot (TensorFlow's local stat has
    whole seconds, ram:// none).
    """
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            raw = f.read()
    except tf.errors.NotFoundError:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _UnreadableState(str(e)) from e
    current, listed, recorded = None, [], []
    for line in text.splitlines():
        other = _STATE_OTHER.match(line)
        if other is not None and other.group(1) == "all_model_checkpoint_timestamps":
            recorded.append(float(line.split(":", 1)[1]))
        if not line.strip() or other is not None:
            continue
        match = _STATE_LINE.match(line)
        if match is None:
            raise _UnreadableState(f"unexpected line {line[:80]!r}")
        if match.group(1) == "model_checkpoint_path":
            current = match.group(2)
        else:
            listed.append(match.group(2))
    if current is None:
        raise _UnreadableState("no model_checkpoint_path")
    directory = paths.parent(path)

    def absolute(name: str) -> str:
        if name.startswith("/") or paths.is_url(name) or directory == ".":
            return name  # (a bare relative prefix stays as the caller wrote it)
        return paths.join(directory, name)

    if times is not None and len(recorded) == len(listed):
        times.update((absolute(n), t) for n, t in zip(listed, recorded))
    ordered = [absolute(n) for n in listed if n != current] + [absolute(current)]
    return ordered


def write_pointer(prefix: str, target: str) -> None:
    """Publishes `target` as the checkpoint `prefix`: writes `<prefix>.checkpoint` in
    TensorFlow's state-file format (so `tf.train.latest_checkpoint(directory,
    latest_filename=...)` reads it too).

    The pointer is written to a temporary name and renamed over the old one:
    on a local disk the rename is atomic; on object stores a small object is
    written whole or not at all, so a reader sees the old or the new pointer.
    """
    name = paths.basename(target)
    text = (
        f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n'
        f"all_model_checkpoint_timestamps: {time.time()!r}\n"
    )
    pointer = pointer_path(prefix)
    tmp = f"{pointer}.tmp-{uuid.uuid4().hex[:12]}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, pointer, overwrite=True)


def published(prefix: str) -> str | None:
    """The files that hold the checkpoint `prefix` now: its pointer's target, else
    `prefix` itself when `prefix.index` exists, else None. Raises
    `DamagedCheckpointError` for a pointer that cannot be read."""
    try:
        listed = read_state(pointer_path(prefix))
    except _UnreadableState as e:
        raise DamagedCheckpointError(
            f"The checkpoint pointer {pointer_path(prefix)!r} cannot be read ({e}); it was "
            "left as it is."
        ) from e
    if listed:
        return listed[-1]
    return prefix if tf.io.gfile.exists(prefix + ".index") else None


def write_state(directory: str, prefix: str) -> None:
    """Points `directory`'s `checkpoint` state file at `prefix` alone (after a restore
    skipped damaged newer ones, so `tf.train.CheckpointManager` continues from
    the checkpoint in use). A state file that could not be read is kept beside
    it as `checkpoint.damaged-<id>`, not overwritten."""
    state = paths.join(directory, STATE_FILE)
    try:
        read_state(state)
    except _UnreadableState:
        tf.io.gfile.rename(state, f"{state}.damaged-{uuid.uuid4().hex[:12]}")
    name = paths.basename(prefix)
    tmp = f"{state}.tmp-{uuid.uuid4().hex[:12]}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    tf.io.gfile.rename(tmp, state, overwrite=True)


# -- save ----------------------------------------------------------------------


def save(model: Any, path: str, *, include_optimizer: bool = True) -> str:
    """Saves a checkpoint to the prefix `path` (chief only writes there); returns the
    prefix written (`path`, or `path.tfk-<id>` when it replaced an older save).

    A first save writes `path.index`/`path.data-*` directly: nothing could be
    lost. An overwrite is published (module docstring): the new files under a
    unique name, the pointer last, the old files deleted after it.
    """
    directory = paths.parent(path)
    strategy = model.distribute_strategy
    checkpoint = tf.train.Checkpoint(**checkpoint_items(model, include_optimizer=include_optimizer))
    if not distribute.is_chief(strategy):
        scratch = write_directory(directory, strategy)
        try:
            scratch_path = paths.join(scratch, paths.basename(path))
            checkpoint.write(
                scratch_path, options=distribute.checkpoint_options(strategy, scratch_path)
            )
        finally:
            cleanup_worker_directory(scratch, directory)
        return path
    paths.make_dirs(directory, "path", path=path, owner="save_checkpoint")  # before any write
    try:
        previous = published(path)
    except DamagedCheckpointError:
        previous = None  # a garbage pointer: replaced below, its target files kept
    stale = [p for p in (previous, path) if p is not None and checkpoint_files(p)]
    if previous is None and not tf.io.gfile.exists(pointer_path(path)) and not stale:
        written = checkpoint.write(path, options=distribute.checkpoint_options(strategy, path))
        write_pointer(path, path)  # its save time, which orders it among others
        return written
    target = f"{path}.tfk-{uuid.uuid4().hex[:12]}"
    try:
        written = checkpoint.write(target, options=distribute.checkpoint_options(strategy, target))
    except BaseException:
        # Not published: remove what this save left (TensorFlow's `<target>_temp`
        # staging directory included); the previous checkpoint is untouched.
        _delete_checkpoint(target)
        remove_tree(f"{target}_temp")
        raise
    write_pointer(path, target)
    for old in dict.fromkeys(stale):  # only after the pointer moved
        _delete_checkpoint(old)
    return written


# -- finding what to restore ---------------------------------------------------


def _order_key(prefix: str, times: dict[str, float]) -> tuple:
    """Newest last: the save time a state file recorded, else the files' time,
    then the number in `ckpt-<n>`."""
    files = checkpoint_files(prefix)
    mtime = max((tf.io.gfile.stat(f).mtime_nsec / 1e9 for f in files), default=None)
    when = times.get(prefix, mtime)
    number = _NUMBER.search(_UNIQUE.sub("", prefix))
    # Files that are all gone sort first (newest): they are reported, not skipped.
    return (not files, when or 0.0, int(number.group(1)) if number else -1)


def candidates(directory: str) -> tuple[list[str], list[str]]:
    """The checkpoint prefixes in `directory`, newest first, and the state files
    there that cannot be read.

    Prefixes come from the `checkpoint` state file and our pointers (their
    targets) and from the `.index`/`.data-*` files themselves, so a garbage
    state file does not hide intact checkpoints. Unique-named files of a
    publishing save count only while a pointer names them.
    """
    names = tf.io.gfile.listdir(directory)
    damaged_states: list[str] = []
    prefixes: dict[str, None] = {}
    pointed: set[str] = set()
    times: dict[str, float] = {}
    for name in names:
        name = name.rstrip("/")
        full = paths.join(directory, name)
        if name == STATE_FILE or name.endswith(POINTER_SUFFIX):
            try:
                listed = read_state(full, times) or []
            except _UnreadableState:
                damaged_states.append(full)
                continue
            for p in listed:
                prefixes[p] = None
                pointed.add(p)
        elif name.endswith(".index"):
            prefixes[full[: -len(".index")]] = None
        elif ".data-" in name:
            prefixes[full[: full.rindex(".data-")]] = None
    # `<prefix>.tfk-<id>` files no pointer names were never published (a save
    # killed before its pointer was written, or after it moved on): not candidates.
    published_targets = {p for p in prefixes if _UNIQUE.search(p)} & pointed
    chosen = [p for p in prefixes if not _UNIQUE.search(p) or p in published_targets]
    return sorted(chosen, key=lambda p: _order_key(p, times), reverse=True), damaged_states


def _damage_note(prefix: str, error: BaseException) -> str:
    files = checkpoint_files(prefix)
    if not tf.io.gfile.exists(prefix + ".index"):
        files.append(prefix + ".index (missing)")
    reason = getattr(error, "message", None) or str(error)
    return f"{', '.join(files) or prefix + ' (no files)'}: {reason.splitlines()[0][:2000]}"


def restore_newest_intact(
    directory: str,
    restore: Callable[[str], None],
    *,
    what: str,
    prefixes: list[str] | None = None,
) -> str | None:
    """Restores the newest checkpoint in `directory` (or of `prefixes`) that can be
    read, with `restore(prefix)`; returns its prefix, or None when there is none.

    `restore` raises `UnreadableCheckpoint` for a checkpoint that cannot be
    read (it is skipped) and a `ValueError` for one of another model (raised
    at once: an older one would not match either). Skipped files are named in
    a warning; when checkpoints or state files exist but none can be read,
    a `DamagedCheckpointError` names the directory. Nothing is deleted.
    """
    damaged_states: list[str] = []
    if prefixes is None:
        if not tf.io.gfile.isdir(directory):
            return None
        prefixes, damaged_states = candidates(directory)
    notes = [f"{s}: not a checkpoint state file" for s in damaged_states]
    last: BaseException | None = None
    for prefix in prefixes:
        try:
            restore(prefix)
        except UnreadableCheckpoint as e:
            notes.append(_damage_note(prefix, e.__cause__ or e))
            last = e
            continue
        if notes:
            message = (
                f"{what}: skipped damaged files in {directory!r} and restored the newest "
                f"intact checkpoint {prefix!r}. Damaged (left in place): " + "; ".join(notes)
            )
            log.warning(message)
            warnings.warn(message, stacklevel=3)
        return prefix
    if notes:
        raise DamagedCheckpointError(
            f"{what}: no intact checkpoint in {directory!r}; every one found is damaged and "
            "was left in place: " + "; ".join(notes) + ". Restore the files, or pass another "
            "directory to start over."
        ) from last
    return None


def load(model: Any, path: str, *, include_optimizer: bool = True) -> None:
    """Restores a checkpoint written by `save` (or a directory holding one).

    A directory: its newest intact checkpoint (damaged newer ones are named
    in a warning). A prefix: the files its pointer names, else the prefix
    itself. Raises a `ValueError` naming what did not match when the
    checkpoint was written by a different model (shapes or missing
    variables), `DamagedCheckpointError` when none can be read, and
    `FileNotFoundError` when there is none.
    """
    prepare_for_restore(model)
    checkpoint = tf.train.Checkpoint(**checkpoint_items(model, include_optimizer=include_optimizer))

    def restore(prefix: str) -> None:
        read(
            checkpoint,
            prefix,
            subject=f"The checkpoint {prefix!r}",
            strategy=model.distribute_strategy,
        )

    # A prefix first: TensorFlow's ram:// file system calls any name prefix a directory.
    target = published(path)
    if target is None and tf.io.gfile.isdir(path):
        if restore_newest_intact(path, restore, what="load_checkpoint") is None:
            raise FileNotFoundError(f"No checkpoint found in the directory {path!r}.")
        return
    if target is None:
        raise FileNotFoundError(
            f"No checkpoint at {path!r} (expected {path}.index). Pass the prefix returned by "
            "save_checkpoint() or the directory holding the checkpoint."
        )
    if target == path or not checkpoint_files(path):
        restore(target)  # one candidate: its own error names the files
        return
    # A pointer and leftover plain files (a kill before they were deleted): the
    # pointer's target first, the older plain files if it cannot be read.
    restore_newest_intact(
        paths.parent(path), restore, what="load_checkpoint", prefixes=[target, path]
    )


def read(
    checkpoint: tf.train.Checkpoint,
    path: str,
    *,
    subject: str,
    mismatch: str = "does not match this model",
    advice: str = "",
    strategy: tf.distribute.Strategy | None = None,
) -> None:
    """Restores `path` into `checkpoint`, every object it saved matched, or fails
    with a `ValueError` and restores nothing that could be half-read silently.

    One rule for every restore (`load_checkpoint`, `BackupAndRestore`): a
    checkpoint of another model (other shapes, missing variables) and one that
    cannot be read (corrupt, truncated) are `ValueError`s that begin with
    `subject` and end with `advice`; the files on disk are left as they are.

    Args:
        checkpoint: The `tf.train.Checkpoint` of the objects to restore.
        path: The checkpoint prefix.
        subject: What the message calls the checkpoint, e.g. "The checkpoint 'x'".
        mismatch: What the message says of a checkpoint of another model.
        advice: A sentence (with its leading ". ") telling what to do.
        strategy: The model's strategy (`None`: the one in scope); a local path
            under a remote TPU is read by this client (`distribute.checkpoint_options`).
    """
    try:
        status = checkpoint.read(path, options=distribute.checkpoint_options(strategy, path))
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as e:
        raise ValueError(f"{subject} {mismatch}: {str(e).splitlines()[0][:2000]}{advice}") from e
    except tf.errors.OpError as e:
        files = checkpoint_files(path) or [f"{path}.index (missing)"]
        raise UnreadableCheckpoint(
            f"{subject} cannot be read (missing, truncated or corrupt files: "
            f"{', '.join(files)}): {e.message.splitlines()[0][:2000]}{advice}"
        ) from e
    status.expect_partial()
