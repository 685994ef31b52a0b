"""One test suite for both image stores: the local folder and S3 (a live SeaweedFS)."""

from __future__ import annotations

import hashlib
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from service_utils.seaweedfs import SeaweedS3

from oncotriage.serving.s3store import S3ContentStore
from oncotriage.serving.settings import Settings
from oncotriage.serving.storage import ContentStore, StoreError, open_store


def s3_settings(server: SeaweedS3, data_dir: Path, prefix: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        store_url=f"s3://{server.bucket}/{prefix}",
        s3_endpoint_url=server.endpoint_url,
        s3_access_key_id=server.access_key,
        s3_secret_access_key=server.secret_key,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ContentStore:
    if request.param == "local":
        return open_store(Settings(data_dir=tmp_path))
    server: SeaweedS3 = request.getfixturevalue("seaweedfs")
    # A prefix per test: tests share the server, never each other's objects.
    return open_store(s3_settings(server, tmp_path, f"t/{tmp_path.name}"))


def test_put_get_is_content_addressed_and_deduplicated(store: ContentStore) -> None:
    first = store.put(b"DICM bytes")
    again = store.put(b"DICM bytes")
    digest = hashlib.sha256(b"DICM bytes").hexdigest()
    assert (first.created, again.created) == (True, False)
    assert first.content_hash == digest
    assert first.relative_path == f"objects/{digest[:2]}/{digest[2:4]}/{digest}.dcm"
    assert first.size_bytes == len(b"DICM bytes")
    assert store.get(first.relative_path) == b"DICM bytes"
    assert store.exists(first.relative_path)
    assert store.path(first.relative_path).read_bytes() == b"DICM bytes"


def test_missing_objects_and_hostile_paths_are_store_errors(store: ContentStore) -> None:
    missing = ContentStore.relative_path_for("0" * 64)
    assert not store.exists(missing)
    with pytest.raises(StoreError, match="missing"):
        store.get(missing)
    for hostile in (
        "../../etc/passwd",
        "objects/../../x.dcm",
        "objects/ab/cd/" + "a" * 64 + ".dcm",
        "/etc/passwd",
    ):
        with pytest.raises(StoreError):
            store.get(hostile)
        with pytest.raises(StoreError):
            store.path(hostile)


def test_large_objects_stream_in_and_out(store: ContentStore) -> None:
    # 20 MiB in 1 MiB chunks: above boto3's multipart threshold (8 MiB).
    chunks = [bytes([i]) * (1024 * 1024) for i in range(20)]
    expected = hashlib.sha256(b"".join(chunks)).hexdigest()
    stored = store.put_stream(iter(chunks))
    assert (stored.content_hash, stored.size_bytes, stored.created) == (
        expected,
        20 * 1024 * 1024,
        True,
    )
    assert store.put_stream(io.BytesIO(b"".join(chunks))).created is False
    hasher = hashlib.sha256()
    blocks = 0
    with store.open(stored.relative_path) as body:
        while block := body.read(1024 * 1024):
            hasher.update(block)
            blocks += 1
    assert hasher.hexdigest() == expected
    assert blocks >= 20
    # A small object put whole is the same object as one streamed.
    assert (
        store.put_stream([b"DICM", b" bytes"]).relative_path
        == store.put(b"DICM bytes").relative_path
    )


def test_store_is_ready(store: ContentStore) -> None:
    store.check_writable()


def test_s3_objects_are_shared_between_processes_with_their_own_caches(
    seaweedfs: SeaweedS3, tmp_path: Path
) -> None:
    prefix = f"shared/{tmp_path.name}"
    api = open_store(s3_settings(seaweedfs, tmp_path / "api", prefix))
    worker = open_store(s3_settings(seaweedfs, tmp_path / "worker", prefix))
    stored = api.put(b"one instance")
    local = worker.path(stored.relative_path)
    assert local.read_bytes() == b"one instance"
    assert local.is_relative_to(tmp_path / "worker" / "store-cache")
    # Same keys as the folder store: the object sits at <prefix>/<relative path>.
    head = worker.client.head_object(  # type: ignore[attr-defined]
        Bucket=seaweedfs.bucket, Key=f"{prefix}/{stored.relative_path}"
    )
    assert head["ContentLength"] == len(b"one instance")


def test_s3_store_unreachable_is_a_store_error(tmp_path: Path) -> None:
    pytest.importorskip("boto3")
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    store = open_store(
        Settings(
            data_dir=tmp_path,
            store_url="s3://nowhere/x",
            s3_endpoint_url=f"http://127.0.0.1:{port}",
            s3_access_key_id="a",
            s3_secret_access_key="b",  # type: ignore[arg-type]
        )
    )
    with pytest.raises(StoreError, match="image store s3://nowhere/x"):
        store.put(b"x")
    with pytest.raises(StoreError):
        store.check_writable()


def test_store_url_must_be_s3(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        Settings(data_dir=tmp_path, store_url="/var/store")


def _bounded_cache(
    server: SeaweedS3, data_dir: Path, prefix: str, max_bytes: int, min_age_s: float = 60.0
) -> S3ContentStore:
    store = open_store(
        s3_settings(server, data_dir, prefix).model_copy(
            update={"store_cache_max_bytes": max_bytes, "store_cache_min_age_s": min_age_s}
        )
    )
    assert isinstance(store, S3ContentStore)
    return store


def _age(path: Path, seconds: float) -> None:
    """Mark a cached copy as last used ``seconds`` ago."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def test_s3_read_cache_evicts_least_recently_used_whole_copies(
    seaweedfs: SeaweedS3, tmp_path: Path
) -> None:
    prefix = f"cache/{tmp_path.name}"
    api = open_store(s3_settings(seaweedfs, tmp_path / "api", prefix))
    objects = [api.put(bytes([index]) * 1000).relative_path for index in range(4)]
    # room for two copies and a half: a third one evicts down to 90 % (2250 bytes)
    worker = _bounded_cache(seaweedfs, tmp_path / "worker", prefix, max_bytes=2500)
    first, second = worker.path(objects[0]), worker.path(objects[1])
    _age(first, 1000)
    _age(second, 900)
    third = worker.path(objects[2])
    assert (first.exists(), second.exists(), third.exists()) == (False, True, True)
    assert worker.cache_bytes() == 2000
    # a use marks a copy: the second, used again, outlives the older third
    _age(third, 800)
    assert worker.path(objects[1]) == second
    fourth = worker.path(objects[3])
    assert (second.exists(), third.exists(), fourth.exists()) == (True, False, True)
    assert second.read_bytes() == bytes([1]) * 1000
    # a reader that misses an evicted copy fetches it again; copies in use (used within
    # the minimum age) are never evicted, so the cache may stay over its bound meanwhile
    assert worker.path(objects[0]).read_bytes() == bytes([0]) * 1000
    assert worker.cache_bytes() == 3000
    assert {path.name for path in (tmp_path / "worker" / "store-cache").rglob("*")} >= {
        Path(objects[0]).name,
        Path(objects[1]).name,
        Path(objects[3]).name,
    }


def test_s3_read_cache_bound_is_safe_with_concurrent_readers(
    seaweedfs: SeaweedS3, tmp_path: Path
) -> None:
    prefix = f"cache-threads/{tmp_path.name}"
    api = open_store(s3_settings(seaweedfs, tmp_path / "api", prefix))
    contents = {api.put(bytes([index]) * 4096).relative_path: index for index in range(12)}
    # room for three copies and no minimum age: copies are evicted while others read them
    worker = _bounded_cache(seaweedfs, tmp_path / "worker", prefix, 3 * 4096, min_age_s=0)
    keys = list(contents)

    def reader(seed: int) -> list[bool]:
        results = []
        for step in range(30):
            key = keys[(seed * 7 + step * 5) % len(keys)]
            for _ in range(20):  # a miss (evicted between path() and the read) refetches
                try:
                    data = worker.path(key).read_bytes()
                    break
                except FileNotFoundError:
                    continue
            results.append(data == bytes([contents[key]]) * 4096)
        return results

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = [ok for results in pool.map(reader, range(4)) for ok in results]
    assert outcomes == [True] * 120  # never half a file, never another object's bytes
    assert worker.cache_bytes() <= 3 * 4096
    leftovers = [p.name for p in (tmp_path / "worker" / "store-cache").rglob(".*")]
    assert leftovers == []  # no temporary download left behind


def test_s3_read_cache_bound_comes_from_settings(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).store_cache_max_bytes == 2 * 1024**3
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, store_cache_max_bytes=-1)
