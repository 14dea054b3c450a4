"""The chat page's files: `/` is index.html, assets are cached for good, the page's headers keep
it to its own origin; a page that was not built says how to build it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamgate.gateway.connect.page import Page


async def get(page: Page, path: str, method: str = "GET") -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await page({"type": "http", "method": method, "path": path}, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


def built(tmp_path: Path) -> Page:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>chat</title>")
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log(1)")
    return Page(tmp_path)


async def test_the_index_at_the_root(tmp_path: Path) -> None:
    status, headers, body = await get(built(tmp_path), "/")
    assert status == 200
    assert body == b"<!doctype html><title>chat</title>"
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    assert headers[b"cache-control"] == b"no-cache"
    assert b"default-src 'self'" in headers[b"content-security-policy"]
    assert headers[b"x-content-type-options"] == b"nosniff"


async def test_assets_never_change_under_one_name(tmp_path: Path) -> None:
    status, headers, body = await get(built(tmp_path), "/assets/index-abc123.js")
    assert status == 200 and body == b"console.log(1)"
    assert headers[b"content-type"].startswith(b"text/javascript")
    assert b"immutable" in headers[b"cache-control"]


async def test_only_the_pages_files_are_served(tmp_path: Path) -> None:
    page = built(tmp_path)
    (tmp_path.parent / "secret.txt").write_text("no")
    for path in ("/../secret.txt", "/assets/../../secret.txt", "/nothing.js"):
        status, _, body = await get(page, path)
        assert status == 404 and body == b"not found\n", path


async def test_head_and_other_methods(tmp_path: Path) -> None:
    page = built(tmp_path)
    status, headers, body = await get(page, "/", "HEAD")
    assert status == 200 and body == b"" and headers[b"content-length"] == b"34"
    status, headers, _ = await get(page, "/", "POST")
    assert status == 405 and headers[b"allow"] == b"GET, HEAD"


async def test_a_page_not_built_says_how_to_build_it(tmp_path: Path) -> None:
    page = Page(tmp_path / "missing")
    assert not page.built
    status, _, body = await get(page, "/")
    assert status == 404 and b"make web" in body
