"""oncotriage: AI-assisted early cancer screening for medical unions.

The distribution's subpackages are the repository's top-level folders:
``oncotriage.datasets`` is ``datasets/``, ``oncotriage.models`` is ``models/``,
``oncotriage.training`` is ``training/`` and ``oncotriage.serving`` is ``serving/``.
This package itself only holds the command line entry point and shared logging setup.
"""

from __future__ import annotations

__version__ = "0.1.0"
