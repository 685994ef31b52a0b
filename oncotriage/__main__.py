"""``python -m oncotriage``: the same as the ``oncotriage`` command."""

from __future__ import annotations

from oncotriage.cli import main

main()
