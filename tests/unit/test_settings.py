"""Settings come from the environment, read once: each field from the variable of its name."""

from __future__ import annotations

import pydantic
import pytest

from imagegen.settings import FAL_IMAGE_HOSTS, Settings


def test_fields_are_read_from_their_variables_in_any_case() -> None:
    settings = Settings.from_environment(
        {"GCP_PROJECT": "p1", "retention_days": "7", "Fal_Key": "k", "LOG_LEVEL": "DEBUG"}
    )
    assert settings.gcp_project == "p1"
    assert settings.retention_days == 7
    assert settings.fal_key.get_secret_value() == "k"
    assert settings.log_level == "DEBUG"


def test_unset_variables_keep_their_defaults_and_other_variables_are_ignored() -> None:
    settings = Settings.from_environment({"PATH": "/bin", "HOME": "/root"})
    assert settings == Settings()
    assert settings.image_fetch_allowed_hosts == FAL_IMAGE_HOSTS
    assert settings.watchdog_invoker is None


def test_values_are_converted_to_the_fields_types() -> None:
    settings = Settings.from_environment(
        {
            "API_KEY_CACHE_SECONDS": "2.5",
            "WATCHDOG_FIRST_CHECK_SECONDS": "0",
            "IMAGE_FETCH_INSECURE_HOSTS": "127.0.0.1:8443, [::1]:9000",
        }
    )
    assert settings.api_key_cache_seconds == 2.5
    assert settings.watchdog_first_check_seconds == 0.0
    assert settings.image_fetch_insecure_hosts == ("127.0.0.1:8443", "[::1]:9000")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RETENTION_DAYS", "0"),
        ("RETENTION_DAYS", "a month"),
        ("WEBHOOK_INGEST_BUDGET_SECONDS", "15"),
        ("SIGNED_URL_TTL_SECONDS", str(8 * 24 * 3600)),
    ],
)
def test_a_malformed_variable_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings.from_environment({name: value})
    assert name.lower() in str(refused.value)


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEANUP_INVOKER", "scheduler@p.iam.gserviceaccount.com")
    assert Settings.from_environment().cleanup_invoker == "scheduler@p.iam.gserviceaccount.com"
