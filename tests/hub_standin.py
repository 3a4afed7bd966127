"""A Hugging Face hub stand-in on 127.0.0.1 for tests: ``huggingface_hub`` (and timm through it) downloads from
it exactly as from the hub (HEAD for metadata, streamed GET, commit and sha256 headers, the cache layout), and
it answers gated repositories with 401 ``GatedRepo`` as the hub does. Nothing leaves the machine."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["FakeHub", "serve_fake_hub"]


class FakeHub(http.server.ThreadingHTTPServer):
    """Serves ``/{org}/{name}/resolve/{revision}/{file}`` like the Hugging Face hub (HEAD + GET with
    ``X-Repo-Commit`` and ``ETag`` = sha256), or 401 ``GatedRepo`` for gated repositories."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.repos: dict[str, dict[str, Any]] = {}
        self.gets: list[str] = []
        self.chunk_delay = 0.0
        """Seconds between 4 KiB chunks (a slow link, to press Cancel during a download)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, repo: str, files: dict[str, bytes], gated: bool = False) -> str:
        commit = hashlib.sha1(repo.encode()).hexdigest()
        self.repos[repo] = {"files": files, "gated": gated, "commit": commit}
        return commit


class _HubHandler(http.server.BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _lookup(self) -> tuple[int, dict[str, str], bytes]:
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return 404, {"X-Error-Code": "RepoNotFound"}, b""
        repo = self.server.repos.get("/".join(parts[:2]))
        if repo is None:
            return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
        if repo["gated"] and "authorization" not in {k.lower() for k in self.headers}:
            return 401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model is restricted"}, b""
        body = repo["files"].get("/".join(parts[4:]))
        if body is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}, b""
        headers = {
            "X-Repo-Commit": repo["commit"],
            "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
            "Content-Length": str(len(body)),
        }
        return 200, headers, body

    def _reply(self, send_body: bool) -> None:
        status, headers, body = self._lookup()
        self.send_response(status)
        if status != 200:
            headers["Content-Length"] = "0"
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if send_body and status == 200:
            self.server.gets.append(self.path)
            for i in range(0, len(body), 4096):
                try:
                    self.wfile.write(body[i : i + 4096])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                time.sleep(self.server.chunk_delay)

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's names)
        self._reply(False)

    def do_GET(self) -> None:  # noqa: N802
        self._reply(True)


@contextlib.contextmanager
def serve_fake_hub(tmp_path: Path, monkeypatch: Any) -> Iterator[FakeHub]:
    """Run a :class:`FakeHub` and point huggingface_hub at it (endpoint, an empty cache under ``tmp_path``,
    online, no token, 4 KiB download chunks) for the duration."""
    from huggingface_hub import constants

    server = FakeHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
