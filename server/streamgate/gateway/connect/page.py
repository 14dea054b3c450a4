"""The chat page (clients/web), served at `/` from the files `make web` builds into this package's
`page/` folder. Only those files are served, read once at start; the page loads nothing from
elsewhere, and its headers say so (Content-Security-Policy)."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path

from streamgate.gateway.connect.asgi import Receive, Scope, Send, respond

__all__ = ["PAGE_DIR", "Page"]

PAGE_DIR = Path(__file__).parent / "page"
"""Where `make web` writes the built page."""

# Scripts, styles and calls come from this origin only; no frames, no plugins.
_SECURITY = (
    (
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
)
_NOT_BUILT = (
    b"The chat page is not built: run `make web` (or `make run`), then reload.\n"
    b"The API on this port works without it.\n"
)


@dataclass(frozen=True)
class _File:
    body: bytes
    content_type: str
    cache_control: str


class Page:
    """The page's files by URL path (`/` is index.html)."""

    def __init__(self, directory: Path = PAGE_DIR) -> None:
        self._files: dict[str, _File] = {}
        if not directory.is_dir():
            return
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            url = "/" + path.relative_to(directory).as_posix()
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if content_type.startswith("text/") or content_type == "application/javascript":
                content_type += "; charset=utf-8"
            # The bundler names assets after their content: they never change under one name.
            immutable = url.startswith("/assets/")
            cache = "public, max-age=31536000, immutable" if immutable else "no-cache"
            self._files[url] = _File(path.read_bytes(), content_type, cache)
        if "/index.html" in self._files:
            self._files["/"] = self._files["/index.html"]

    @property
    def built(self) -> bool:
        """The page's files were found."""
        return "/" in self._files

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET or HEAD a file of the page; 404 for anything else."""
        if scope["method"] not in ("GET", "HEAD"):
            await respond(send, 405, [("allow", "GET, HEAD")])
            return
        found = self._files.get(scope["path"])
        if found is None:
            text = b"not found\n" if self.built else _NOT_BUILT
            await respond(send, 404, [("content-type", "text/plain; charset=utf-8")], text)
            return
        headers = [
            ("content-type", found.content_type),
            ("content-length", str(len(found.body))),
            ("cache-control", found.cache_control),
            *_SECURITY,
        ]
        await respond(send, 200, headers, b"" if scope["method"] == "HEAD" else found.body)
