"""The image store: DICOM bytes kept by content hash under ``store_dir`` or in S3.

Paths are built only from a SHA-256 hex digest computed here (or checked against
``[0-9a-f]{64}``), never from anything a client sent, so no input can point outside
the store. :class:`ContentStore` is the local folder; :class:`~oncotriage.serving.s3store.
S3ContentStore` keeps the same keys in an S3-compatible bucket behind the same interface.
:func:`open_store` picks one from the settings (``store_url``).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from oncotriage.serving.settings import Settings

_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
#: Chunk size for streaming reads and writes (1 MiB).
CHUNK_BYTES = 1024 * 1024


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

    @classmethod
    def check_relative_path(cls, relative_path: str) -> str:
        """``relative_path`` if this store could have made it, else :class:`StoreError`."""
        parts = relative_path.split("/")
        if len(parts) != 4 or parts[0] != "objects" or not parts[3].endswith(".dcm"):
            raise StoreError(f"not a store path: {relative_path[:200]!r}")
        if cls.relative_path_for(parts[3][:-4]) != relative_path:
            raise StoreError(f"not a store path: {relative_path[:200]!r}")
        return relative_path

    def path(self, relative_path: str) -> Path:
        """Absolute path of a stored object, refusing anything not made by this store."""
        return self.root / self.check_relative_path(relative_path)

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

    def put_stream(self, chunks: Iterable[bytes] | IO[bytes]) -> StoredObject:
        """Keep a large object read chunk by chunk (never held whole in memory).

        ``chunks`` is an iterable of ``bytes`` or a binary file object. The object is
        spooled to a temporary file beside its target while hashed, fsynced, then renamed.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with spool(chunks, self.root) as (tmp_path, content_hash, size):
            relative_path = self.relative_path_for(content_hash)
            target = self.root / relative_path
            if target.exists():
                return StoredObject(content_hash, relative_path, size, created=False)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_path, target)
            except OSError as error:
                raise StoreError(
                    f"could not write to the image store {self.root}: {error}"
                ) from error
        return StoredObject(content_hash, relative_path, size, created=True)

    def get(self, relative_path: str) -> bytes:
        try:
            return self.path(relative_path).read_bytes()
        except FileNotFoundError as error:
            raise StoreError(f"object missing from the image store: {relative_path}") from error

    @contextmanager
    def open(self, relative_path: str) -> Iterator[IO[bytes]]:
        """A binary stream of a stored object, for reading large objects in chunks."""
        try:
            handle = self.path(relative_path).open("rb")
        except FileNotFoundError as error:
            raise StoreError(f"object missing from the image store: {relative_path}") from error
        with handle:
            yield handle

    def exists(self, relative_path: str) -> bool:
        return self.path(relative_path).is_file()

    def describe(self) -> str:
        """Where the store is, for logs and error messages (no credentials)."""
        return str(self.root)

    def check_writable(self) -> None:
        """Raise :class:`StoreError` if the store cannot take a write right now."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ready-"):
                pass
        except OSError as error:
            raise StoreError(f"image store {self.root} is not writable: {error}") from error


def _iter_chunks(chunks: Iterable[bytes] | IO[bytes]) -> Iterator[bytes]:
    if hasattr(chunks, "read"):
        reader = chunks  # a file object
        while block := reader.read(CHUNK_BYTES):
            yield block
    else:
        yield from chunks


@contextmanager
def spool(chunks: Iterable[bytes] | IO[bytes], directory: Path) -> Iterator[tuple[Path, str, int]]:
    """Write ``chunks`` to a fsynced temporary file in ``directory`` while hashing them.

    Yields ``(path, sha256 hex digest, size)``; the file is removed on exit unless the
    caller moved it away.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".incoming-")
    except OSError as error:
        raise StoreError(f"could not write to the image store {directory}: {error}") from error
    tmp_path = Path(tmp_name)
    try:
        hasher = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as handle:
                for block in _iter_chunks(chunks):
                    hasher.update(block)
                    size += len(block)
                    handle.write(block)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise StoreError(f"could not write to the image store {directory}: {error}") from error
        yield tmp_path, hasher.hexdigest(), size
    finally:
        tmp_path.unlink(missing_ok=True)


def open_store(settings: Settings) -> ContentStore:
    """The image store the settings name: ``store_url`` ``s3://bucket/prefix`` or a folder."""
    url = settings.store_url
    if url and url.startswith("s3://"):
        from oncotriage.serving.s3store import S3ContentStore

        return S3ContentStore.from_settings(settings)
    return ContentStore(settings.image_store_dir)
