"""The README is the front door: its configuration table must name every setting."""

from __future__ import annotations

from pathlib import Path

from imagegen.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_configuration_table() -> None:
    text = README.read_text()
    table = text[text.index("## Configuration") :]
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in table]
    assert not missing, f"README's configuration table lacks {missing}"
