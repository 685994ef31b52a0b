"""Request bodies on disk, read one instance at a time.

A STOW-RS body can be hundreds of megabytes (a CT series). Held in memory, a 500 MB upload
raised the server's memory by about 1 GB (the body, then a copy of every part). Here the body
is spooled to a temporary file as it arrives, the multipart boundaries are found in a
read-only memory map of that file (page cache, not the process's own memory), and each part is
read when intake gets to it, so a request holds one instance in memory at a time.
"""

from __future__ import annotations

import mmap
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, overload

from oncotriage.serving.dicomweb import PartSpan, split_multipart

#: Parts whose declared Content-Type is one of these are DICOM (no type: the request's).
DICOM_PART_TYPES = frozenset({"", "application/dicom"})


class _ReadOnIndex(Sequence[bytes]):
    """A sequence of objects' bytes, each read when indexed (never all held at once)."""

    def __init__(self, count: int) -> None:
        self._count = count

    def _read(self, index: int) -> bytes:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return [self._read(i) for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._read(index % len(self))


class SpooledParts(_ReadOnIndex):
    """The parts of a spooled multipart body, each read from the file when indexed."""

    def __init__(self, buffer: mmap.mmap | bytes, spans: list[PartSpan]) -> None:
        super().__init__(len(spans))
        self._buffer = buffer
        self.spans = spans

    def _read(self, index: int) -> bytes:
        span = self.spans[index]
        return bytes(self._buffer[span.start : span.end])

    def declared_types(self) -> list[str]:
        """Each part's Content-Type (media type only, lower case; "" when absent)."""
        return [span.content_type.split(";")[0].strip().lower() for span in self.spans]


async def spool(chunks: AsyncIterator[bytes]) -> IO[bytes]:
    """Write ``chunks`` to an anonymous temporary file (deleted when closed)."""
    spooled = tempfile.TemporaryFile(prefix="oncotriage-upload-")
    try:
        async for chunk in chunks:
            if chunk:
                spooled.write(chunk)
        spooled.flush()
    except BaseException:
        spooled.close()  # e.g. the body passed the size limit part way
        raise
    return spooled


@contextmanager
def multipart_parts(spooled: IO[bytes], boundary: str, *, max_parts: int) -> Iterator[SpooledParts]:
    """The parts of the spooled body (see :func:`split_multipart` for the errors)."""
    size = spooled.seek(0, 2)
    if size == 0:
        yield SpooledParts(b"", split_multipart(b"", boundary, max_parts=max_parts))
        return
    mapped = mmap.mmap(spooled.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield SpooledParts(mapped, split_multipart(mapped, boundary, max_parts=max_parts))
    finally:
        mapped.close()


class UploadedFiles(_ReadOnIndex):
    """Form uploads (``POST /v1/studies``), each read from its spooled file when indexed."""

    def __init__(self, files: Sequence[IO[bytes]], read: Callable[[IO[bytes]], bytes]) -> None:
        super().__init__(len(files))
        self._files = files
        self._reader = read

    def _read(self, index: int) -> bytes:
        return self._reader(self._files[index])


def read_whole(file: IO[bytes]) -> bytes:
    file.seek(0)
    return file.read()
