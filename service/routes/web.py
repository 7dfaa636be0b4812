"""GET / and /static/*: the analyst page, plain HTML, CSS and JavaScript modules from ``service/web/``.

No build step and nothing from elsewhere: the files are served as they lie in the package, only those listed in
``WEB_FILES`` (a fixed list, so no path from a request ever reaches the file system), with a Content-Security-Policy
that lets the page load only from this service.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.errors import ServiceError

WEB = Path(__file__).resolve().parents[1] / "web"
MEDIA_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
WEB_FILES = {path.name: path for path in WEB.iterdir() if path.suffix in MEDIA_TYPES and path.name != "index.html"}
HEADERS = {
    # Scripts, styles, pictures and API calls from this origin only: an offline page, and no injected script runs.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # revalidate, so that a new release's page is never mixed with old modules
}

router = APIRouter(include_in_schema=False)


class UnknownWebFile(ServiceError):
    status = 404
    slug, title = "page-file-not-found", "Page file not found"

    def __init__(self, name: str) -> None:
        super().__init__(f"no page file named {name!r}; expected one of {', '.join(sorted(WEB_FILES))}")


@router.get("/")
def page() -> FileResponse:
    """The analyst page."""
    return FileResponse(WEB / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    """One of the page's own files."""
    path = WEB_FILES.get(name)
    if path is None:
        raise UnknownWebFile(name)
    return FileResponse(path, media_type=f"{MEDIA_TYPES[path.suffix]}; charset=utf-8", headers=HEADERS)
