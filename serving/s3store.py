"""The image store in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, Ceph RGW).

Same keys as the folder store (``<prefix>/objects/ab/cd/<sha256>.dcm``) and the same
relative paths in the database, so a deployment can move its objects between the two.

- **Durable before acknowledgement**: ``put`` returns only after the server answered the
  PUT with success, and the PUT carries ``Content-MD5`` so the server refuses a body
  damaged on the way. Intake acknowledges an instance after ``put`` returned.
- **Streaming**: ``put_stream`` spools to a local temporary file while hashing (the key is
  the content hash, known only at the end), then uploads it with boto3's managed transfer
  (multipart above 8 MiB); ``open`` streams the object body; nothing holds a series whole.
- **Local reads**: DICOM readers want files, so :meth:`S3ContentStore.path` downloads an
  object once into a read cache (``root``: the process's own ``data_dir/store-cache``).
  Objects never change (the key is their hash), so a cached copy never goes stale.
- **A bounded cache** (``store_cache_max_bytes``): each use marks a copy (its mtime: atime
  is often not kept); past the bound the least recently used copies are deleted, whole
  files only, down to 90 % of it. A copy used in the last ``store_cache_min_age_s`` is
  never deleted, so a series handed to a reader stays whole; a reader that still misses a
  copy (a job retried much later) calls :meth:`~S3ContentStore.path` again, which fetches it
  anew. Downloads land under a temporary name and are renamed, so no reader ever sees
  half a file, and a file already opened stays readable after its name is deleted.

boto3 is imported here only; the folder store does not need it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlparse

from oncotriage.serving.storage import ContentStore, StoredObject, StoreError, spool

if TYPE_CHECKING:
    from oncotriage.serving.settings import Settings


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")`` (prefix may be empty)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    return parsed.netloc, parsed.path.strip("/")


class S3ContentStore(ContentStore):
    """Content-addressed objects in ``bucket`` under ``prefix``; ``root`` is the read cache."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        cache_dir: Path,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        client: Any = None,
        cache_max_bytes: int = 0,
        cache_min_age_s: float = 60.0,
    ) -> None:
        super().__init__(cache_dir)
        if cache_max_bytes < 0 or cache_min_age_s < 0:
            raise ValueError("cache_max_bytes and cache_min_age_s must be >= 0 (0 bytes: no bound)")
        self.cache_max_bytes = cache_max_bytes
        self.cache_min_age_s = cache_min_age_s
        self._cache_lock = threading.Lock()
        self._cache_bytes: int | None = None  # this process's estimate; a scan corrects it
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region or "us-east-1",
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 5, "mode": "standard"},
                    # Only when an operation needs it: S3-compatible servers differ in
                    # support for the newer default CRC checksums; Content-MD5 is universal.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ContentStore:
        bucket, prefix = parse_s3_url(str(settings.store_url))
        secret = settings.s3_secret_access_key
        return cls(
            bucket,
            prefix,
            settings.store_cache_dir or settings.data_dir / "store-cache",
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            cache_max_bytes=settings.store_cache_max_bytes,
            cache_min_age_s=settings.store_cache_min_age_s,
        )

    def key(self, relative_path: str) -> str:
        relative_path = self.check_relative_path(relative_path)
        return f"{self.prefix}/{relative_path}" if self.prefix else relative_path

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _error(self, action: str, error: Exception) -> StoreError:
        return StoreError(f"could not {action} the image store {self.describe()}: {error}")

    @staticmethod
    def _is_missing(error: Exception) -> bool:
        response = getattr(error, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        return code in {"404", "NoSuchKey", "NotFound"}

    def exists(self, relative_path: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(relative_path))
        except ClientError as error:
            if self._is_missing(error):
                return False
            raise self._error("read", error) from error
        except BotoCoreError as error:
            raise self._error("reach", error) from error
        return True

    def put(self, data: bytes) -> StoredObject:
        from botocore.exceptions import BotoCoreError, ClientError

        content_hash = self.digest(data)
        relative_path = self.relative_path_for(content_hash)
        if self.exists(relative_path):
            return StoredObject(content_hash, relative_path, len(data), created=False)
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.key(relative_path),
                Body=data,
                ContentMD5=md5,
                ContentType="application/dicom",
            )
        except (ClientError, BotoCoreError) as error:
            raise self._error("write to", error) from error
        return StoredObject(content_hash, relative_path, len(data), created=True)

    def put_stream(self, chunks: Iterable[bytes] | IO[bytes]) -> StoredObject:
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        self.root.mkdir(parents=True, exist_ok=True)
        with spool(chunks, self.root) as (tmp_path, content_hash, size):
            relative_path = self.relative_path_for(content_hash)
            if self.exists(relative_path):
                return StoredObject(content_hash, relative_path, size, created=False)
            try:
                # Multipart above 8 MiB; each part is checked by the server against its
                # MD5 (the part ETag) and the upload completes only once all are stored.
                self.client.upload_file(
                    str(tmp_path),
                    self.bucket,
                    self.key(relative_path),
                    ExtraArgs={"ContentType": "application/dicom"},
                    Config=TransferConfig(max_concurrency=4),
                )
            except (ClientError, BotoCoreError) as error:
                raise self._error("write to", error) from error
            # The spooled copy is the object: keep it as the read cache's copy.
            cached = super().path(relative_path)
            if not cached.exists():
                cached.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_path, cached)
                self._note_cached(size)
        return StoredObject(content_hash, relative_path, size, created=True)

    def get(self, relative_path: str) -> bytes:
        with self.open(relative_path) as body:
            return body.read()

    @contextmanager
    def open(self, relative_path: str) -> Iterator[IO[bytes]]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(relative_path))
        except ClientError as error:
            if self._is_missing(error):
                raise StoreError(f"object missing from the image store: {relative_path}") from error
            raise self._error("read", error) from error
        except BotoCoreError as error:
            raise self._error("reach", error) from error
        body = response["Body"]
        try:
            yield body
        finally:
            body.close()

    def path(self, relative_path: str) -> Path:
        """A local file with the object's bytes: downloaded into the read cache unless a copy
        is there (then marked as just used, so eviction keeps it)."""
        cached = super().path(relative_path)
        try:
            os.utime(cached)
            return cached
        except FileNotFoundError:
            pass
        except OSError:  # not ours to mark (another user's cache): still a good copy
            if cached.is_file():
                return cached
        cached.parent.mkdir(parents=True, exist_ok=True)
        expected = Path(relative_path).stem
        fd, tmp_name = tempfile.mkstemp(dir=cached.parent, prefix=".download-")
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as handle, self.open(relative_path) as body:
                for block in iter(lambda: body.read(1024 * 1024), b""):
                    hasher.update(block)
                    handle.write(block)
            if hasher.hexdigest() != expected:
                raise StoreError(f"object in the image store does not match its hash: {expected}")
            os.replace(tmp_name, cached)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        self._note_cached(cached.stat().st_size)
        return cached

    def cache_bytes(self) -> int:
        """Bytes of the read cache's copies now (a scan of the folder)."""
        return sum(size for _, size, _ in self._cached_copies())

    def _cached_copies(self) -> list[tuple[float, int, Path]]:
        """``(mtime, size, path)`` of every whole copy in the read cache (not the temporary
        files of downloads under way)."""
        copies = []
        for path in self.root.glob("objects/*/*/*.dcm"):
            if path.name.startswith("."):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # evicted meanwhile
                continue
            copies.append((stat.st_mtime, stat.st_size, path))
        return copies

    def _note_cached(self, size: int) -> None:
        """Count a new copy; past the bound, evict (at most one eviction at a time)."""
        if not self.cache_max_bytes:
            return
        with self._cache_lock:
            if self._cache_bytes is None:
                self._cache_bytes = self.cache_bytes()  # the new copy included
            else:
                self._cache_bytes += size
            if self._cache_bytes > self.cache_max_bytes:
                self._cache_bytes = self._evict()

    def _evict(self) -> int:
        """Delete the least recently used copies, whole files, down to 90 % of the bound,
        keeping those used in the last ``cache_min_age_s``. Returns the bytes left."""
        copies = sorted(self._cached_copies(), key=lambda copy: copy[0])
        total = sum(size for _, size, _ in copies)
        target = int(self.cache_max_bytes * 0.9)
        newest_evictable = time.time() - self.cache_min_age_s
        for mtime, size, path in copies:
            if total <= target or mtime > newest_evictable:
                break
            try:
                path.unlink()
            except FileNotFoundError:  # another process of this cache evicted it
                pass
            total -= size
        return total

    def check_writable(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as error:
            raise self._error("reach", error) from error
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"read cache {self.root} is not writable: {error}") from error
