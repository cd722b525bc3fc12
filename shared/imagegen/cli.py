"""The command-line client: `python -m imagegen.cli generate "a prompt" --n 2 --out DIR`.

It talks only to the public API (README.md), at API_URL with API_KEY; both are read from
`.dev/stack.env` when it exists (what `make dev` writes; its DEV_API_KEY counts as API_KEY),
and the environment overrides that file. No function imports this module: `rich` is in the
`cli` extra and the dev group, never in a function bundle (infra/bundle.py).

Exit codes: 0 done, 1 the API refused or the generation failed, 2 bad usage."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

GENERATIONS = "/v1/images/generations"
TERMINAL = {"completed", "failed", "canceled"}
ASPECT = re.compile(r"\d+:\d+")
CUSTOM = re.compile(r"(\d+)[x×](\d+)")
EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}

# Piped output keeps ids and URLs whole on one line.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(Exception):
    """A failure to report (message, then detail lines) before exiting with `code`."""

    def __init__(self, message: str, details: Sequence[str] = (), code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)
        self.code = code


# -- configuration ---------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    return values


def settings(environ: dict[str, str] | None = None) -> tuple[str, str]:
    """(API URL, API key): the environment over `.dev/stack.env` (here or at the repo root)."""
    environ = dict(os.environ if environ is None else environ)
    found: dict[str, str] = {}
    for folder in (Path(__file__).resolve().parents[2], Path.cwd()):
        found.update(read_env_file(folder / ".dev" / "stack.env"))
    merged = {**found, **{k: v for k, v in environ.items() if v}}
    url = merged.get("API_URL", "")
    key = merged.get("API_KEY") or merged.get("DEV_API_KEY", "")
    return url.rstrip("/"), key


# -- the API ---------------------------------------------------------------------------------


class Client:
    def __init__(self, base_url: str, api_key: str) -> None:
        if not base_url:
            raise CliError("No API_URL: run `make dev`, or set API_URL (and API_KEY)", code=2)
        if not api_key:
            raise CliError("No API_KEY: set API_KEY (or run `make dev` for DEV_API_KEY)", code=2)
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(30.0, connect=10.0),
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"Cannot reach the API at {self.http.base_url}: {exc}") from exc
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_error:
            raise api_error(response.status_code, body, response.text)
        return body

    def download(self, url: str) -> httpx.Response:
        try:
            response = httpx.get(url, timeout=60.0, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise CliError(f"Cannot download {url}: {exc}") from exc
        if response.is_error:
            raise CliError(f"Downloading an image failed: HTTP {response.status_code}")
        return response


def api_error(status: int, body: Any, text: str) -> CliError:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return CliError(f"HTTP {status}: {text[:300]}")
    details = []
    for detail in error.get("details") or []:
        if isinstance(detail, dict):
            field = detail.get("field")
            message = detail.get("message", "")
            details.append(f"{field}: {message}" if field else str(message))
        else:
            details.append(str(detail))
    code = error.get("code", "error")
    return CliError(f"{error.get('message', 'Request failed')} (HTTP {status}, {code})", details)


# -- generate --------------------------------------------------------------------------------


def parse_lora(text: str) -> dict[str, Any]:
    lora_id, _, scale = text.partition(":")
    if not lora_id:
        raise argparse.ArgumentTypeError(f"--lora {text!r}: expected ID or ID:SCALE")
    if not scale:
        return {"id": lora_id}
    try:
        return {"id": lora_id, "scale": float(scale)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lora {text!r}: the scale is not a number") from None


def size_fields(size: str | None) -> dict[str, Any]:
    """--size: a preset (square_hd, landscape_4_3…), WIDTHxHEIGHT, or an aspect ratio (16:9)."""
    if not size:
        return {}
    if custom := CUSTOM.fullmatch(size):
        return {"width": int(custom[1]), "height": int(custom[2])}
    if ASPECT.fullmatch(size):
        return {"aspectRatio": size}
    return {"imageSize": size}


def generation_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": args.prompt, "numImages": args.n}
    if args.model:
        body["model"] = args.model
    body.update(size_fields(args.size))
    if args.lora:
        body["loras"] = args.lora
    optional = {
        "seed": args.seed,
        "negativePrompt": args.negative,
        "steps": args.steps,
        "guidanceScale": args.guidance,
        "imageUrl": args.image_url,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def wait(client: Client, generation_id: str, timeout: float) -> dict[str, Any]:
    """Polls the record until it ends, showing its status as it goes."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    record: dict[str, Any] = client.call("GET", f"{GENERATIONS}/{generation_id}")
    with err.status(f"[bold]{record['status']}[/]") as status:
        while record["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise CliError(
                    f"Still {record['status']} after {timeout:.0f} s: "
                    f"`python -m imagegen.cli show {generation_id}` to look again"
                )
            time.sleep(0.5)
            record = client.call("GET", f"{GENERATIONS}/{generation_id}")
            elapsed = time.monotonic() - started
            status.update(f"[bold]{record['status']}[/] · {elapsed:.0f} s")
    err.print(f"status: {record['status']} ({time.monotonic() - started:.1f} s)")
    return record


def save_images(
    client: Client, record: dict[str, Any], folder: Path
) -> list[tuple[Path, dict[str, Any]]]:
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for index, image in enumerate(record.get("images") or []):
        if not image.get("url"):
            continue
        response = client.download(image["url"])
        content_type = image.get("contentType") or response.headers.get("content-type", "")
        suffix = EXTENSIONS.get(content_type.split(";")[0], ".jpg")
        path = folder / f"{record['id']}-{index}{suffix}"
        path.write_bytes(response.content)
        saved.append((path, image))
    return saved


def cmd_generate(client: Client, args: argparse.Namespace) -> int:
    accepted = client.call("POST", GENERATIONS, json=generation_body(args))
    generation_id = accepted["id"]
    out.print(f"generation: {generation_id}")
    record = wait(client, generation_id, args.timeout)
    if record["status"] != "completed":
        error = record.get("error") or {}
        why = error.get("message") if isinstance(error, dict) else error
        raise CliError(f"Generation {generation_id} {record['status']}: {why or 'no reason given'}")
    for path, image in save_images(client, record, Path(args.out)):
        seed = image.get("seed", record.get("seed"))
        size = f"{image.get('width')}x{image.get('height')}"
        out.print(f"{path}  {size}  {path.stat().st_size:,} bytes  seed {seed}")
    return 0


# -- the other commands ----------------------------------------------------------------------


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    record = client.call("GET", f"{GENERATIONS}/{args.id}")
    out.print(f"{record['id']}  {record['status']}  {record['model']}  {record['prompt']}")
    for image in record.get("images") or []:
        out.print(f"  {image.get('width')}×{image.get('height')} seed {image.get('seed')}")
        out.print(f"  {image.get('url')}", overflow="ignore", crop=False)
    return 0


def cmd_history(client: Client, args: argparse.Namespace) -> int:
    page = client.call("GET", GENERATIONS, params={"page": args.page, "perPage": args.per_page})
    table = Table(title=f"History, page {page['page']} ({page['total']} in all), newest first")
    table.add_column("id", no_wrap=True)
    for column in ("status", "model", "images", "created", "prompt"):
        table.add_column(column, overflow="fold")
    for record in page["images"]:
        table.add_row(
            record["id"],
            record["status"],
            record["model"],
            str(record.get("numImages", "")),
            str(record.get("createdAt", ""))[:19].replace("T", " "),
            record["prompt"][:60],
        )
    out.print(table)
    return 0


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    client.call("DELETE", f"{GENERATIONS}/{args.id}")
    out.print(f"deleted {args.id}")
    return 0


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    record = client.call("POST", f"{GENERATIONS}/{args.id}/cancel")
    out.print(f"{args.id}: {record['status']}")
    return 0


def cmd_usage(client: Client, _: argparse.Namespace) -> int:
    usage = client.call("GET", "/v1/usage")
    limits = usage.get("limits") or {}
    out.print(f"month:       {usage['month']} (resets {usage.get('resetsAt')})")
    out.print(f"generations: {usage['generations']}  images: {usage['images']}")
    out.print(f"megapixels:  {usage['megapixels']:.2f} of {limits.get('monthlyMegapixels')}")
    out.print(f"cost (est.): ${usage['estimatedCostUsd']:.4f}  in flight: {usage.get('inFlight')}")
    return 0


def cmd_loras_list(client: Client, _: argparse.Namespace) -> int:
    loras = client.call("GET", "/v1/loras")["loras"]
    table = Table(title=f"{len(loras)} LoRAs")
    for column in ("id", "status", "model", "trigger", "scale", "name"):
        table.add_column(column, overflow="fold")
    for lora in loras:
        name = " ".join(filter(None, [lora.get("firstName"), lora.get("lastName")]))
        table.add_row(
            lora["id"],
            lora.get("status", ""),
            lora.get("model", ""),
            lora.get("trigger") or "",
            str(lora.get("defaultScale", "")),
            name,
        )
    out.print(table)
    return 0


def cmd_loras_add(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"url": args.url}
    optional = {
        "trigger": args.trigger,
        "firstName": args.first_name,
        "lastName": args.last_name,
        "model": args.model,
        "defaultScale": args.scale,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    lora = client.call("POST", "/v1/loras", json=body)
    out.print(f"added {lora['id']} ({lora.get('status')})")
    return 0


# -- the parser ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m imagegen.cli",
        description="The imagegen API from the command line (API_URL, API_KEY; "
        ".dev/stack.env when present).",
    )
    root.add_argument("--api-url", help="overrides API_URL")
    root.add_argument("--api-key", help="overrides API_KEY")
    commands = root.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="generate images and download them")
    generate.add_argument("prompt")
    generate.add_argument("--model", help="a model id (GET /v1/models); the API's default if none")
    generate.add_argument("--n", type=int, default=1, help="number of images (1..5)")
    generate.add_argument("--size", help="a preset (square_hd…), WIDTHxHEIGHT, or a ratio (16:9)")
    generate.add_argument(
        "--lora", type=parse_lora, action="append", metavar="ID[:SCALE]", help="repeatable"
    )
    generate.add_argument("--seed", type=int)
    generate.add_argument("--negative", help="negative prompt (models that take one)")
    generate.add_argument("--steps", type=int)
    generate.add_argument("--guidance", type=float)
    generate.add_argument("--image-url", help="input image (image-to-image models)")
    generate.add_argument("--out", default=".", help="folder for the images (default: here)")
    generate.add_argument("--timeout", type=float, default=300.0, help="seconds to wait")
    generate.set_defaults(run=cmd_generate)

    show = commands.add_parser("show", help="one generation")
    show.add_argument("id")
    show.set_defaults(run=cmd_show)

    history = commands.add_parser("history", help="your generations, newest first")
    history.add_argument("--page", type=int, default=1)
    history.add_argument("--per-page", type=int, default=10)
    history.set_defaults(run=cmd_history)

    delete = commands.add_parser("delete", help="delete a generation and its images")
    delete.add_argument("id")
    delete.set_defaults(run=cmd_delete)

    cancel = commands.add_parser("cancel", help="cancel a queued or running generation")
    cancel.add_argument("id")
    cancel.set_defaults(run=cmd_cancel)

    usage = commands.add_parser("usage", help="this month's usage and limits")
    usage.set_defaults(run=cmd_usage)

    loras = commands.add_parser("loras", help="list or add LoRAs")
    lora_commands = loras.add_subparsers(dest="lora_command", required=True)
    lora_commands.add_parser("list", help="the LoRAs").set_defaults(run=cmd_loras_list)
    add = lora_commands.add_parser("add", help="register a LoRA by URL (admin)")
    add.add_argument("url", help="http(s) URL, gs://bucket/path, or a path in LORA_BUCKET")
    add.add_argument("--trigger")
    add.add_argument("--first-name")
    add.add_argument("--last-name")
    add.add_argument("--model", help="default: the API's (flux-lora)")
    add.add_argument("--scale", type=float, help="default scale")
    add.set_defaults(run=cmd_loras_add)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        url, key = settings()
        client = Client(args.api_url or url, args.api_key or key)
        code: int = args.run(client, args)
        return code
    except CliError as exc:
        err.print(f"[bold red]error:[/] {exc.message}")
        for line in exc.details:
            err.print(f"  {line}")
        return exc.code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
