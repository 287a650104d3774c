"""Regenerate the settings table inside README.md: ``python -m freshrec.readme``."""

from __future__ import annotations

import re
from pathlib import Path

from freshrec.settings import settings_table

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(
    r"(<!-- settings-table:start -->\n).*?(\n<!-- settings-table:end -->)", re.DOTALL
)


def render(text: str) -> str:
    """``text`` with the block between the settings-table markers replaced by the current table."""
    return _BLOCK.sub(lambda m: m.group(1) + settings_table() + m.group(2), text)


if __name__ == "__main__":
    README.write_text(render(README.read_text()))
