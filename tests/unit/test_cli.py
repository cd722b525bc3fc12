"""The command-line client's pure parts: configuration, arguments, error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagegen import cli


def test_settings_read_stack_env_and_the_environment_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".dev").mkdir()
    (tmp_path / ".dev" / "stack.env").write_text("API_URL=http://file:1/\nDEV_API_KEY=igk_file\n")
    monkeypatch.chdir(tmp_path)
    assert cli.settings({}) == ("http://file:1", "igk_file")
    assert cli.settings({"API_KEY": "igk_env"}) == ("http://file:1", "igk_env")
    assert cli.settings({"API_URL": "http://env:2", "DEV_API_KEY": "igk_dev"}) == (
        "http://env:2",
        "igk_dev",
    )


def test_sizes_and_loras() -> None:
    assert cli.size_fields("square_hd") == {"imageSize": "square_hd"}
    assert cli.size_fields("640x480") == {"width": 640, "height": 480}
    assert cli.size_fields("16:9") == {"aspectRatio": "16:9"}
    assert cli.parse_lora("abc") == {"id": "abc"}
    assert cli.parse_lora("abc:0.7") == {"id": "abc", "scale": 0.7}
    with pytest.raises(Exception, match="not a number"):
        cli.parse_lora("abc:x")


def test_api_errors_name_their_fields() -> None:
    body = {
        "error": {
            "code": "validation_error",
            "message": "Invalid request: numImages",
            "details": [{"field": "numImages", "message": "Input should be <= 5"}],
        }
    }
    error = cli.api_error(422, body, "")
    assert error.message == "Invalid request: numImages (HTTP 422, validation_error)"
    assert error.details == ["numImages: Input should be <= 5"]
    assert cli.api_error(502, None, "Bad gateway").message == "HTTP 502: Bad gateway"


def test_missing_configuration_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "settings", lambda: ("", ""))
    assert cli.main(["usage"]) == 2
