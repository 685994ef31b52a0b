"""The benchmarks' tables in docs/benchmarks.md: each between its own pair of markers."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def markers(name: str) -> tuple[str, str]:
    """``<!-- NAME:start -->`` and ``<!-- NAME:end -->``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_block(name: str, block: str, doc: Path = DOC) -> None:
    """Put ``block`` (markers included) in place of the ``name`` block of ``doc``, or at its
    end when it has none yet."""
    start_marker, end_marker = markers(name)
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end > start:
        text = text[:start] + block + text[end + len(end_marker) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")


#: SIMD flags worth naming in a benchmark's header (lscpu lists many more)
_SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_header() -> str:
    """``CPU: <lscpu model name> (<n> usable cores; flags: avx2 fma ...)``."""
    import os
    import subprocess

    model, flags = "unknown CPU", ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                model = value.strip()
            elif key.strip() == "Flags":
                flags = " ".join(f for f in _SIMD_FLAGS if f in value.split())
    except (OSError, subprocess.CalledProcessError):
        pass
    cores = len(os.sched_getaffinity(0))
    return f"CPU: {model} ({cores} usable cores; flags: {flags or 'n/a'})."
