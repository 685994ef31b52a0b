"""The image store: DICOM bytes kept by content hash under ``store_dir``.

Paths are built only from a SHA-256 hex digest computed here (or checked against
``[0-9a-f]{64}``), never from anything a client sent, so no input can point outside
the store. The same interface can later be backed by an S3-compatible object store.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


class StoreError(RuntimeError):
    """The store cannot keep or return an object (full disk, missing object, bad key)."""


@dataclass(frozen=True)
class StoredObject:
    """Where a blob went. ``relative_path`` is what the database keeps."""

    content_hash: str
    relative_path: str
    size_bytes: int
    created: bool


class ContentStore:
    """A content-addressed folder: ``objects/ab/cd/abcd....dcm`` for digest ``abcd...``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    @staticmethod
    def relative_path_for(content_hash: str) -> str:
        if not _HASH_RE.fullmatch(content_hash):
            raise StoreError(f"not a SHA-256 hex digest: {content_hash[:80]!r}")
        return f"objects/{content_hash[:2]}/{content_hash[2:4]}/{content_hash}.dcm"

    def path(self, relative_path: str) -> Path:
        """Absolute path of a stored object, refusing anything not made by this store."""
        parts = relative_path.split("/")
        if len(parts) != 4 or parts[0] != "objects" or not parts[3].endswith(".dcm"):
            raise StoreError(f"not a store path: {relative_path[:200]!r}")
        if self.relative_path_for(parts[3][:-4]) != relative_path:
            raise StoreError(f"not a store path: {relative_path[:200]!r}")
        return self.root / relative_path

    def put(self, data: bytes) -> StoredObject:
        """Keep ``data``; writing the same bytes twice stores them once."""
        content_hash = self.digest(data)
        relative_path = self.relative_path_for(content_hash)
        target = self.root / relative_path
        if target.exists():
            return StoredObject(content_hash, relative_path, len(data), created=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a file, even across processes.
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except OSError as error:
            Path(tmp_name).unlink(missing_ok=True)
            raise StoreError(f"could not write to the image store {self.root}: {error}") from error
        return StoredObject(content_hash, relative_path, len(data), created=True)

    def get(self, relative_path: str) -> bytes:
        try:
            return self.path(relative_path).read_bytes()
        except FileNotFoundError as error:
            raise StoreError(f"object missing from the image store: {relative_path}") from error

    def check_writable(self) -> None:
        """Raise :class:`StoreError` if the store cannot take a write right now."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ready-"):
                pass
        except OSError as error:
            raise StoreError(f"image store {self.root} is not writable: {error}") from error
