"""File-system steps that survive a kill at any point: synced writes, atomic replaces, deletes
that never leave a half-deleted folder under its old name.

Every function here is a sequence of single-call steps (write + fsync, rename, fsync of the
folder) chosen so that the state on disk between any two calls is one a reader accepts.
"""
from __future__ import annotations

import json
import os
import shutil


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str) -> None:
    for root, _, files in os.walk(path):
        for f in files:
            with open(os.path.join(root, f), "rb+") as fh:
                os.fsync(fh.fileno())
        fsync_dir(root)


def write_synced(path: str, data: bytes) -> None:
    """Writes `data` to `path` and fsyncs the file (the caller renames it or syncs the folder)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_json_synced(path: str, obj) -> None:
    write_synced(path, (json.dumps(obj, indent=1) + "\n").encode())


def replace_atomic(path: str, data: bytes) -> None:
    """`path` holds either its old content or `data`, never a part of it (write, fsync, rename)."""
    tmp = f"{path}.tmp"  # fixed: a kill's leftover is overwritten and renamed away by the next write
    try:
        write_synced(tmp, data)
        os.replace(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def replace_json_atomic(path: str, obj) -> None:
    replace_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


def remove_tree(path: str, trash_name: str) -> None:
    """Deletes folder `path`: first renamed to `trash_name` beside it (one atomic step, so a kill
    never leaves a half-deleted folder that still looks complete), then removed."""
    trash = os.path.join(os.path.dirname(path), trash_name)
    os.rename(path, trash)
    shutil.rmtree(trash)
