"""ImageFetcher: fal's image URLs are hostile input. The fetcher talks to a small HTTP
server on 127.0.0.1 (listed as an insecure host where a test needs to reach it); names are
resolved by a fake `socket.getaddrinfo`, so nothing leaves the machine."""

from __future__ import annotations

import contextlib
import gzip
import io
import ipaddress
import resource
import socket
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from imagegen.errors import RetryableError, UpstreamRejectedError
from imagegen.image_fetch import (
    MAX_PIXELS,
    ImageFetcher,
    UrlPolicy,
    parse_allowed_host,
    parse_insecure_host,
)
from imagegen.settings import FAL_IMAGE_HOSTS, Settings, get_settings

MB = 1024 * 1024
Route = Callable[[BaseHTTPRequestHandler], None]


# -- images ----------------------------------------------------------------------------
def image_bytes(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buffer, format=fmt)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR claims width x height (CRC fixed): tiny, but a bomb to decode."""
    data = bytearray(image_bytes("PNG", (1, 1)))
    data[16:24] = struct.pack(">II", width, height)  # after signature, length and b"IHDR"
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_bomb() -> bytes:
    data = bytearray(image_bytes("JPEG", (8, 8)))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def webp_bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="WEBP", lossless=True)
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    data[21:25] = struct.pack("<I", (16383 << 14) | 16383 | (data[24] & 0xF0) << 24)
    return bytes(data)


JPEG, PNG, WEBP = image_bytes("JPEG"), image_bytes("PNG"), image_bytes("WEBP")


# -- a local image host ----------------------------------------------------------------
class ImageHost:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.sent: dict[str, int] = {}  # bytes of body written by the streaming routes
        host = self

        class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: a body may end at close
            def do_GET(self) -> None:
                host.requests.append(self.path)
                route = host.routes.get(self.path.partition("?")[0])
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    route(self) if route else self.send_error(404)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"

    def reply(self, path: str, status: int, body: bytes = b"", **headers: str) -> None:
        fields = {name.replace("_", "-"): value for name, value in headers.items()}
        fields.setdefault("Content-Length", str(len(body)))

        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            for name, value in fields.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)

        self.routes[path] = route

    def stream(
        self,
        path: str,
        total: int,
        *,
        declared: int | None = None,
        pause: float = 0.0,
        chunk: int = 64 * 1024,
        headers_pause: float = 0.0,
    ) -> None:
        """`total` bytes of PNG-labelled zeros, written lazily, `declared` as Content-Length."""

        def route(handler: BaseHTTPRequestHandler) -> None:
            sent = 0
            try:
                time.sleep(headers_pause)
                handler.send_response(200)
                handler.send_header("Content-Type", "image/png")
                if declared is not None:
                    handler.send_header("Content-Length", str(declared))
                handler.end_headers()
                handler.wfile.flush()
                while sent < total:
                    time.sleep(pause)
                    handler.wfile.write(b"\0" * min(chunk, total - sent))
                    sent += min(chunk, total - sent)
            finally:
                self.sent[path] = sent

        self.routes[path] = route

    def wait_sent(self, path: str) -> int:
        for _ in range(200):
            if path in self.sent:
                return self.sent[path]
            time.sleep(0.01)
        raise AssertionError(f"{path} still streaming")


@pytest.fixture(scope="module")
def host() -> Iterator[ImageHost]:
    h = ImageHost()
    for name, data, ctype in (("jpeg", JPEG, "jpeg"), ("png", PNG, "png"), ("webp", WEBP, "webp")):
        h.reply(f"/{name}", 200, data, Content_Type=f"image/{ctype}")
    h.reply("/png-params", 200, PNG, Content_Type="IMAGE/PNG; charset=binary")
    h.reply("/png-as-jpeg", 200, PNG, Content_Type="image/jpeg")
    h.reply("/text-as-jpeg", 200, b"<html>not an image</html>", Content_Type="image/jpeg")
    h.reply("/html", 200, b"<html></html>", Content_Type="text/html")
    h.reply("/svg", 200, b"<svg/>", Content_Type="image/svg+xml")
    h.reply("/gif", 200, image_bytes("GIF"), Content_Type="image/gif")
    h.reply("/untyped", 200, PNG)
    h.reply("/gzip", 200, gzip.compress(PNG), Content_Type="image/png", Content_Encoding="gzip")
    h.reply("/truncated-png", 200, PNG[: len(PNG) // 2], Content_Type="image/png")
    h.reply("/truncated-jpeg", 200, JPEG[: len(JPEG) // 2], Content_Type="image/jpeg")
    h.reply("/png-bomb", 200, png_bomb(50000, 50000), Content_Type="image/png")
    h.reply("/jpeg-bomb", 200, jpeg_bomb(), Content_Type="image/jpeg")
    h.reply("/webp-bomb", 200, webp_bomb(), Content_Type="image/webp")
    h.reply("/150x100", 200, image_bytes("PNG", (150, 100)), Content_Type="image/png")
    for status in (404, 429, 500, 503):
        h.reply(f"/status/{status}", status, b"no")
    h.reply("/redirect/relative", 302, Location="/png")
    h.reply("/redirect/absolute", 307, Location=f"{h.base}/webp")
    for hops in range(1, 5):
        target = f"/redirect/chain/{hops - 1}" if hops > 1 else "/jpeg"
        h.reply(f"/redirect/chain/{hops}", 301, Location=target)
    h.reply("/redirect/evil", 302, Location="https://evil.example/x.png?X-Goog-Signature=SECRET")
    h.reply("/redirect/scheme-relative", 302, Location="//evil.example/x.png")
    h.reply("/redirect/metadata", 302, Location="http://169.254.169.254/latest/meta-data/")
    h.reply("/redirect/fal-over-http", 302, Location="http://v3.fal.media/files/x.png")
    h.reply("/redirect/fal-to-metadata", 302, Location="https://v3.fal.media/files/x.png")
    h.reply("/redirect/no-location", 302)
    h.stream("/huge", 40 * MB)
    h.stream("/huge-declared", 40 * MB, declared=40 * MB, headers_pause=0, pause=0.5)
    h.stream("/lying-short", 40 * MB, declared=1000)
    h.reply("/lying-long", 200, PNG, Content_Type="image/png", Content_Length="100000")
    h.stream("/drip", 200, chunk=1, pause=0.05)
    h.routes["/slow"] = lambda handler: time.sleep(1.5)
    threading.Thread(target=h.httpd.serve_forever, daemon=True).start()
    yield h
    h.httpd.shutdown()
    h.httpd.server_close()


@pytest.fixture
def fetcher(host: ImageHost) -> ImageFetcher:
    host.requests.clear()
    return make_fetcher(host)


def make_fetcher(host: ImageHost, **overrides: object) -> ImageFetcher:
    options: dict[str, object] = {
        "max_bytes": 1 * MB,
        "timeout_seconds": 5.0,
        "allowed_hosts": FAL_IMAGE_HOSTS,
        "insecure_hosts": [f"127.0.0.1:{host.port}"],
        "max_pixels": MAX_PIXELS,
    }
    options.update(overrides)
    return ImageFetcher(**options)  # type: ignore[arg-type]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """name -> addresses; other names fail to resolve (IP literals resolve as themselves)."""
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(name: str, port: int, *args: object, **kwargs: object) -> list:
        if name in table:
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
                if ":" in a
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in table[name]
            ]
        try:
            ipaddress.ip_address(name)
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "unknown in this test") from None
        return real(name, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def rejected(fetcher: ImageFetcher, url: str) -> UpstreamRejectedError:
    with pytest.raises(UpstreamRejectedError) as caught:
        fetcher.fetch(url)
    return caught.value


def retryable(fetcher: ImageFetcher, url: str) -> RetryableError:
    with pytest.raises(RetryableError) as caught:
        fetcher.fetch(url)
    assert caught.value.code == "image_unavailable"
    return caught.value


# -- happy paths -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "content_type", "data"),
    [
        ("/jpeg", "image/jpeg", JPEG),
        ("/png", "image/png", PNG),
        ("/webp", "image/webp", WEBP),
        ("/png-params", "image/png", PNG),
    ],
    ids=["jpeg", "png", "webp", "png-with-parameters"],
)
def test_images_are_fetched_with_their_size_and_type(
    fetcher: ImageFetcher, host: ImageHost, path: str, content_type: str, data: bytes
) -> None:
    image = fetcher.fetch(f"{host.base}{path}")
    assert (image.data, image.content_type, image.width, image.height) == (
        data,
        content_type,
        64,
        48,
    )
    assert image.extension == content_type.split("/")[1].replace("jpeg", "jpg")


def test_https_to_the_insecure_host_is_allowed_too() -> None:
    target = UrlPolicy([], ["127.0.0.1:8443"]).check("https://127.0.0.1:8443/files/a.png")
    assert target.insecure and target.port == 8443


# -- the allow-list --------------------------------------------------------------------
POLICY = UrlPolicy(FAL_IMAGE_HOSTS, ["127.0.0.1:8080", "[::1]:8080"])


@pytest.mark.parametrize(
    "url",
    [
        "https://v3.fal.media/files/monkey/a.png",
        "https://v3b.fal.media/files/a.jpeg",
        "https://fal.media/files/a.webp?X-Goog-Signature=abc",
        "https://FAL.MEDIA/files/a.png",
        "https://fal.media:443/files/a.png",
        "https://storage.googleapis.com/falserverless/gallery/a.png",
        "http://127.0.0.1:8080/files/a.png",
        "https://127.0.0.1:8080/files/a.png",
        "http://[::1]:8080/files/a.png",
    ],
)
def test_allowed_urls(url: str) -> None:
    target = POLICY.check(url)
    assert target.insecure == ("127.0.0.1" in url or "[::1]" in url)


@pytest.mark.parametrize(
    "url",
    [
        "http://fal.media/files/a.png",  # https only
        "https://fal.media:8443/files/a.png",
        "https://fal.media.evil.com/files/a.png",
        "https://evilfal.media/files/a.png",
        "https://evil.com/fal.media/files/a.png",
        "https://fal.media./files/a.png",
        "https://fal.media@evil.com/files/a.png",
        "https://fal.media%40evil.com/files/a.png",
        "https://user:password@fal.media/files/a.png",
        "https://f\u0430l.media/files/a.png",  # Cyrillic a: a different (punycode) name
        "https://falserverless.storage.googleapis.com/a.png",
        "https://storage.googleapis.com/a.png",
        "https://storage.googleapis.com/falserverless",
        "https://storage.googleapis.com/falserverless.evil/a.png",
        "https://storage.googleapis.com/other/falserverless/a.png",
        "https://storage.googleapis.com/falserverless/../other/a.png",
        "https://storage.googleapis.com/falserverless/%2e%2e/other/a.png",
        "https://storage.googleapis.com/falserverless%2f..%2fother/a.png",
        "https://storage.googleapis.com/falserverless%2Fother/a.png",  # not /falserverless/
        "https://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8081/files/a.png",  # insecure entries match host and port exactly
        "http://127.0.0.1/files/a.png",
        "http://localhost:8080/files/a.png",
        "http://127.0.0.2:8080/files/a.png",
        "ftp://fal.media/files/a.png",
        "file:///etc/passwd",
        "//fal.media/files/a.png",
        "/files/a.png",
        "",
        "https://[::1/",
        "not a url",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        POLICY.check(url)
    assert caught.value.code == "image_host_not_allowed"


def test_a_refused_url_is_refused_before_any_connection(
    fetcher: ImageFetcher, host: ImageHost
) -> None:
    url = f"http://localhost:{host.port}/png"  # the same server, but not the listed name
    assert rejected(fetcher, url).code == "image_host_not_allowed"
    assert host.requests == []


def test_messages_do_not_echo_paths_or_queries(fetcher: ImageFetcher, host: ImageHost) -> None:
    secret = "?X-Goog-Signature=SECRET"
    messages = [
        rejected(fetcher, f"https://evil.example/private/a.png{secret}").message,
        retryable(fetcher, f"{host.base}/status/500{secret}").message,
        rejected(fetcher, f"{host.base}/redirect/evil{secret}").message,
    ]
    for message in messages:
        assert "SECRET" not in message and "private" not in message and "status" not in message


def test_entries_are_parsed_strictly() -> None:
    assert parse_allowed_host(" Storage.GoogleAPIs.com/falserverless/ ") == (
        "storage.googleapis.com",
        "/falserverless",
    )
    assert parse_allowed_host("fal.media") == ("fal.media", "")
    assert parse_insecure_host("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert parse_insecure_host("[::1]:9000") == ("::1", 9000)
    for entry in ("*.fal.media", "https://fal.media", "fal.media:443", "fal.media/../x", "a b", ""):
        with pytest.raises(ValueError):
            parse_allowed_host(entry)
    for entry in ("127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "a b:80", ":80", "h:８０"):
        with pytest.raises(ValueError):
            parse_insecure_host(entry)


# -- addresses -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.0.0.5"],
        ["192.168.1.1"],
        ["169.254.169.254"],
        ["100.64.0.1"],
        ["0.0.0.0"],
        ["224.0.0.1"],
        ["240.0.0.1"],
        ["::1"],
        ["fe80::1"],
        ["fc00::1"],
        ["ff02::1"],
        ["::ffff:127.0.0.1"],
        ["::ffff:169.254.169.254"],
        ["2002:a9fe:a9fe::1"],  # 6to4 of 169.254.169.254
        ["64:ff9b::a9fe:a9fe"],  # NAT64 of 169.254.169.254
        ["93.184.215.14", "10.0.0.1"],  # any non-global address is enough
    ],
)
def test_allowed_names_resolving_to_non_global_addresses_are_refused(
    fetcher: ImageFetcher, dns: dict[str, list[str]], addresses: list[str]
) -> None:
    dns["v3.fal.media"] = addresses
    error = rejected(fetcher, "https://v3.fal.media/files/a.png")
    assert error.code == "image_address_not_allowed"


def test_a_non_global_name_is_refused_unless_it_is_an_insecure_host(
    host: ImageHost, dns: dict[str, list[str]]
) -> None:
    """`images.test` resolves to the local server: allow-listed, it is still refused, on
    the address; as an insecure host:port, it is fetched."""
    dns["images.test"] = ["127.0.0.1"]
    host.requests.clear()
    listed = make_fetcher(host, allowed_hosts=["images.test"], insecure_hosts=[])
    error = rejected(listed, "https://images.test/png")
    assert error.code == "image_address_not_allowed"
    assert host.requests == []
    insecure = make_fetcher(host, insecure_hosts=[f"images.test:{host.port}"])
    assert insecure.fetch(f"http://images.test:{host.port}/png").data == PNG


@pytest.mark.usefixtures("dns")
def test_literal_ip_hosts_are_checked_like_names(host: ImageHost) -> None:
    literal = make_fetcher(host, allowed_hosts=["169.254.169.254", "127.0.0.1"])
    for url in ("https://169.254.169.254/latest/meta-data/", "https://127.0.0.1/png"):
        assert rejected(literal, url).code == "image_address_not_allowed"


class ToLocalHost(httpx.HTTPTransport):
    """Sends every request to the local server, whatever its URL: a name that passed the
    address check but resolves to 127.0.0.1 when connecting (DNS rebinding)."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self.port)
        return super().handle_request(request)


def test_the_address_connected_to_is_checked_too(
    host: ImageHost, dns: dict[str, list[str]]
) -> None:
    dns["v3.fal.media"] = ["93.184.215.14"]  # global when checked...
    rebound = make_fetcher(host, insecure_hosts=[], transport=ToLocalHost(host.port))
    host.requests.clear()
    error = rejected(rebound, "https://v3.fal.media/png")  # ...loopback when connected
    assert error.code == "image_address_not_allowed"
    assert host.requests == ["/png"]  # the request went out; the body was not taken


def test_proxies_from_the_environment_are_not_used(
    host: ImageHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy would hide the address actually connected to."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    assert make_fetcher(host).fetch(f"{host.base}/png").data == PNG


# -- redirects -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "data"),
    [("/redirect/relative", PNG), ("/redirect/absolute", WEBP), ("/redirect/chain/3", JPEG)],
    ids=["relative", "absolute", "three-hops"],
)
def test_redirects_within_the_allow_list_are_followed(
    fetcher: ImageFetcher, host: ImageHost, path: str, data: bytes
) -> None:
    assert fetcher.fetch(f"{host.base}{path}").data == data
    assert host.requests[0] == path and len(host.requests) > 1


@pytest.mark.parametrize(
    "path",
    [
        "/redirect/chain/4",  # one hop too many
        "/redirect/evil",
        "/redirect/scheme-relative",
        "/redirect/metadata",
        "/redirect/fal-over-http",
        "/redirect/no-location",
    ],
)
def test_redirects_outside_the_rules_are_refused(
    fetcher: ImageFetcher, host: ImageHost, path: str
) -> None:
    assert rejected(fetcher, f"{host.base}{path}").code == "image_redirect_refused"
    assert "/jpeg" not in host.requests


def test_a_redirect_to_an_allowed_name_on_a_private_address_is_refused(
    fetcher: ImageFetcher, host: ImageHost, dns: dict[str, list[str]]
) -> None:
    dns["v3.fal.media"] = ["169.254.169.254"]
    error = rejected(fetcher, f"{host.base}/redirect/fal-to-metadata")
    assert error.code == "image_address_not_allowed"


# -- bytes and time --------------------------------------------------------------------
def test_a_huge_body_is_cut_off_at_the_limit(fetcher: ImageFetcher, host: ImageHost) -> None:
    started = time.monotonic()
    assert rejected(fetcher, f"{host.base}/huge").code == "image_too_large"
    assert time.monotonic() - started < 5
    assert host.wait_sent("/huge") < 40 * MB


def test_a_declared_length_above_the_limit_is_refused_before_reading(
    fetcher: ImageFetcher, host: ImageHost
) -> None:
    started = time.monotonic()  # the body trickles in at 64 KiB per half second
    assert rejected(fetcher, f"{host.base}/huge-declared").code == "image_too_large"
    assert time.monotonic() - started < 0.4


def test_a_declared_length_below_the_body_bounds_what_is_read(
    fetcher: ImageFetcher, host: ImageHost
) -> None:
    assert rejected(fetcher, f"{host.base}/lying-short").code == "invalid_image"


def test_a_body_shorter_than_declared_is_retried(fetcher: ImageFetcher, host: ImageHost) -> None:
    retryable(fetcher, f"{host.base}/lying-long")


def test_a_slow_host_times_out(host: ImageHost) -> None:
    started = time.monotonic()
    retryable(make_fetcher(host, timeout_seconds=0.5), f"{host.base}/slow")
    assert time.monotonic() - started < 1.4


def test_a_trickling_body_hits_the_overall_deadline(host: ImageHost) -> None:
    """A byte every 50 ms never trips the read timeout; the deadline stops it."""
    started = time.monotonic()
    retryable(make_fetcher(host, timeout_seconds=0.5), f"{host.base}/drip")
    assert time.monotonic() - started < 2


def test_an_unreachable_host_is_retried(host: ImageHost) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    closed = make_fetcher(host, insecure_hosts=[f"127.0.0.1:{port}"])
    retryable(closed, f"http://127.0.0.1:{port}/png")


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_statuses_are_retried(
    fetcher: ImageFetcher, host: ImageHost, status: int
) -> None:
    assert str(status) in retryable(fetcher, f"{host.base}/status/{status}").message


def test_other_statuses_fail_for_good(fetcher: ImageFetcher, host: ImageHost) -> None:
    assert rejected(fetcher, f"{host.base}/status/404").code == "image_unavailable"


# -- content ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/html", "/svg", "/gif", "/untyped", "/gzip"])
def test_unsupported_types_are_refused(fetcher: ImageFetcher, host: ImageHost, path: str) -> None:
    assert rejected(fetcher, f"{host.base}{path}").code == "image_unsupported_type"


@pytest.mark.parametrize(
    "path", ["/text-as-jpeg", "/png-as-jpeg", "/truncated-png", "/truncated-jpeg"]
)
def test_bodies_that_do_not_decode_as_their_type_are_refused(
    fetcher: ImageFetcher, host: ImageHost, path: str
) -> None:
    assert rejected(fetcher, f"{host.base}{path}").code == "invalid_image"


@pytest.mark.parametrize("path", ["/png-bomb", "/jpeg-bomb", "/webp-bomb"])
def test_decompression_bombs_are_refused_quickly_and_cheaply(
    fetcher: ImageFetcher, host: ImageHost, path: str
) -> None:
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    assert rejected(fetcher, f"{host.base}{path}").code == "image_too_many_pixels"
    assert time.monotonic() - started < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_kib < 100 * 1024


def test_the_configured_pixel_limit_is_checked_before_decoding(host: ImageHost) -> None:
    assert make_fetcher(host, max_pixels=64 * 48).fetch(f"{host.base}/png").width == 64
    error = rejected(make_fetcher(host, max_pixels=64 * 48 - 1), f"{host.base}/png")
    assert error.code == "image_too_many_pixels"


def test_pillows_bomb_warning_is_an_error_without_touching_global_filters(
    fetcher: ImageFetcher, host: ImageHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow only warns between its limit and twice that: 15,000 pixels against 10,000."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    filters = list(warnings.filters)
    assert rejected(fetcher, f"{host.base}/150x100").code == "image_too_many_pixels"
    assert warnings.filters == filters
    assert Image.MAX_IMAGE_PIXELS == 10_000  # tightened limits are kept, never loosened


def test_pillows_limit_is_tightened_to_the_ceiling(
    fetcher: ImageFetcher, host: ImageHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10 * MAX_PIXELS)
    fetcher.fetch(f"{host.base}/png")
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS


# -- settings --------------------------------------------------------------------------
@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMAGE_FETCH_ALLOWED_HOSTS", "IMAGE_FETCH_INSECURE_HOSTS", "IMAGE_MAX_PIXELS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_environment()
    assert settings.image_fetch_allowed_hosts == (
        "v3.fal.media",
        "v3b.fal.media",
        "fal.media",
        "storage.googleapis.com/falserverless",
    )
    assert settings.image_fetch_insecure_hosts == ()
    assert settings.image_max_pixels == 4096 * 4096 >= 2 * 2048 * 2048
    assert settings.image_download_max_bytes == 25 * MB


def test_settings_parse_comma_separated_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_FETCH_ALLOWED_HOSTS", " cdn.example , storage.example/bucket/x ,")
    monkeypatch.setenv("IMAGE_FETCH_INSECURE_HOSTS", "127.0.0.1:8443,[::1]:9000")
    monkeypatch.setenv("IMAGE_MAX_PIXELS", "1000000")
    settings = Settings.from_environment()
    assert settings.image_fetch_allowed_hosts == ("cdn.example", "storage.example/bucket/x")
    assert settings.image_fetch_insecure_hosts == ("127.0.0.1:8443", "[::1]:9000")
    assert settings.image_max_pixels == 1_000_000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IMAGE_FETCH_ALLOWED_HOSTS", "fal.media,*.evil.com"),
        ("IMAGE_FETCH_ALLOWED_HOSTS", "https://fal.media"),
        ("IMAGE_FETCH_INSECURE_HOSTS", "127.0.0.1"),
        ("IMAGE_MAX_PIXELS", str(MAX_PIXELS + 1)),
        ("IMAGE_MAX_PIXELS", "0"),
    ],
)
def test_malformed_settings_fail_at_startup(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError):
        Settings.from_environment()


@pytest.mark.usefixtures("fresh_settings")
def test_a_fetcher_built_as_before_reads_the_settings(
    host: ImageHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """context.py builds ImageFetcher(max_bytes, timeout): the rest comes from settings."""
    monkeypatch.delenv("IMAGE_FETCH_INSECURE_HOSTS", raising=False)
    strict = ImageFetcher(MB, 5.0)
    assert rejected(strict, f"{host.base}/png").code == "image_host_not_allowed"
    get_settings.cache_clear()
    monkeypatch.setenv("IMAGE_FETCH_INSECURE_HOSTS", f"127.0.0.1:{host.port}")
    monkeypatch.setenv("IMAGE_MAX_PIXELS", "100")
    local = ImageFetcher(MB, 5.0)
    assert rejected(local, f"{host.base}/png").code == "image_too_many_pixels"
