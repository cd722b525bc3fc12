"""The web playground in a real browser: Debian's chromium driven by Playwright against the
session's stack. Sign in with the dev key, generate two images, find them in the history,
delete one; and an invalid input shows its message next to the field.

It saves a screenshot; with SCREENSHOT=docs/playground.png it refreshes the README's."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack import LocalStack
from tests.support import Api

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# The README's picture is refreshed on demand (SCREENSHOT=docs/playground.png make test), so
# an ordinary run leaves the working tree clean.
SCREENSHOT = Path(
    os.environ.get("SCREENSHOT")
    or Path(tempfile.gettempdir()) / f"imagegen-playground-{os.getpid()}.png"
).resolve()
TIMEOUT_MS = 20_000


def ensure_chromium() -> None:
    """Installs Debian's chromium when it is missing (the CI image may lack it)."""
    if CHROMIUM.exists():
        return
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail("chromium is missing and there is no apt-get: apt-get install -y chromium")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, apt, "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
        subprocess.run([*sudo, apt, "update"], env=env, capture_output=True, timeout=300)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"apt-get install chromium failed:\n{done.stderr[-2000:]}"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    ensure_chromium()
    from playwright.sync_api import sync_playwright

    # The context manager stops the Playwright driver and the browser it started (its own
    # child processes), pass or fail.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser, stack: LocalStack):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(stack.env["API_URL"] + "/")
    page.get_by_label("API key").fill(stack.env["DEV_API_KEY"])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("prompt").wait_for(state="visible")
    yield page
    context.close()


def test_generate_then_delete_from_history(page, api: Api) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    prompt = f"a lighthouse at dusk, watercolor {uuid.uuid4().hex[:6]}"
    page.get_by_test_id("prompt").fill(prompt)
    page.get_by_label("Number of images").fill("2")
    page.get_by_label("Size").select_option("square")
    page.get_by_test_id("generate").click()

    images = page.get_by_test_id("result-image")
    expect(images).to_have_count(2)
    expect(page.locator("#progress li.done")).to_have_count(3)
    expect(page.get_by_test_id("error")).to_be_empty()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=result-image]')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    page.evaluate("window.scrollTo(0, 0)")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), type="png")

    # Each image links to the full image and carries its seed and a reuse action.
    assert images.first.locator("xpath=..").get_attribute("href", timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Reuse the settings of image 1")).to_be_visible()

    page.get_by_role("tab", name="History").click()
    item = page.get_by_test_id("history-item").filter(has_text=prompt)
    expect(item).to_have_count(1)
    generation_id = item.get_attribute("data-id")
    assert generation_id
    assert api.get(generation_id).json()["status"] == "completed"

    page.once("dialog", lambda dialog: dialog.accept())
    item.get_by_role("button", name="Delete").click()
    expect(page.get_by_test_id("history-item").filter(has_text=prompt)).to_have_count(0)
    assert api.get(generation_id).status_code == 404


def test_invalid_inputs_show_their_message_next_to_the_field(page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    # Phone-sized: nothing is wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    page.get_by_test_id("prompt").fill("x" * 2001)
    page.get_by_label("Size").select_option("custom")
    page.get_by_label("Width").fill("250")
    page.get_by_test_id("generate").click()
    expect(page.locator("#err-prompt")).to_contain_text("2000")
    expect(page.locator("#err-width")).to_contain_text("256")
    expect(page.get_by_test_id("prompt")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("result-image")).to_have_count(0)

    # A check only the server makes (a LoRA that does not exist): its 422 names the field,
    # and the page puts the server's message next to it.
    page.get_by_test_id("prompt").fill("a fine prompt")
    page.get_by_label("Width").fill("512")
    page.get_by_label("Model").select_option("sdxl")
    page.evaluate(
        "() => { const s = document.getElementById('lora');"
        " s.append(new Option('gone', 'no-such-lora')); s.value = 'no-such-lora'; }"
    )
    page.get_by_test_id("generate").click()
    expect(page.locator("#err-loras")).not_to_be_empty()
    expect(page.get_by_test_id("error")).not_to_be_empty()
