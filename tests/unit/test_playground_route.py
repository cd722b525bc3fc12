"""The playground's static route: only the flat files of imagegen/static/, with their content
types and cache headers; any other name (traversal included) is a 404."""

from __future__ import annotations

import flask
import pytest

from imagegen import api
from imagegen.errors import NotFoundError
from imagegen.routes import playground

app = flask.Flask(__name__)


def get(path: str, **headers: str) -> flask.Response:
    with app.test_request_context(path, headers=headers):
        return api.handle(flask.request)


@pytest.mark.parametrize(
    "name",
    [
        "../api.py",
        "..%2fapi.py",
        "../../pyproject.toml",
        "x/../app.js",
        ".hidden.js",
        "app.py",
        "nope.js",
        "/etc/passwd",
        "..",
        "app.js/.",
        "index.html\x00.js",
    ],
)
def test_names_outside_the_folder_are_not_found(name: str) -> None:
    with pytest.raises(NotFoundError):
        playground.static_file(name)


@pytest.mark.parametrize("path", ["/assets/../routes/playground.py", "/assets/%2e%2e/api.py"])
def test_traversal_through_the_router_is_a_json_404(path: str) -> None:
    response = get(path)
    assert response.status_code == 404
    assert response.is_json


def test_page_and_assets_have_types_caching_and_etags() -> None:
    page = get("/")
    assert page.status_code == 200
    assert page.content_type == "text/html; charset=utf-8"
    assert page.headers["Cache-Control"] == "no-cache"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert b'data-testid="prompt"' in page.get_data()

    script = get("/assets/app.js")
    assert script.content_type == "text/javascript; charset=utf-8"
    assert "max-age" in script.headers["Cache-Control"]
    assert script.headers["X-Content-Type-Options"] == "nosniff"
    assert get("/assets/app.css").content_type == "text/css; charset=utf-8"

    again = get("/assets/app.js", **{"If-None-Match": script.headers["ETag"]})
    assert again.status_code == 304


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for name in ("index.html", "app.js", "app.css"):
        text = playground.static_file(name).read_text()
        assert "https://" not in text and "//cdn" not in text, name
