"""A small Hugging Face Hub on 127.0.0.1 for the tests: downloads, and the uploads huggingface_hub makes.

It speaks what huggingface_hub's own code sends and expects (read from its `hf_hub_download`, `create_repo`,
`create_branch` and `create_commit`): `resolve` URLs with X-Repo-Commit/ETag headers and X-Error-Code on
misses; `/api/repos/create`; `/api/validate-yaml` for the model card; `preupload`, which here answers
"regular" for every file so contents arrive inline, base64 in the commit's NDJSON (no LFS, no Xet); `branch`
and `commit`. Writes need a bearer token the server knows. Committed files stay in memory and are served back
by the download path, so one server gives a round trip from `mma push` to `mma.load_model`.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, so every client runs in a
fresh Python process (`run_python`) with those variables set exactly as a user would set them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
WRITE_TOKEN = "hf_test_write_token"


class FakeHub(http.server.ThreadingHTTPServer):
    """Repositories as commits of in-memory files; records every request as `METHOD PATH`."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.commits: dict[tuple[str, str], dict[str, bytes]] = {}
        self.branches: dict[tuple[str, str], str] = {}
        self.messages: dict[tuple[str, str], str] = {}
        self.visibility: dict[str, str] = {}
        self.tokens = {WRITE_TOKEN}
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def publish(self, repo: str, files: dict[str, bytes], branch: str = "main", message: str = "") -> str:
        """A new commit holding `files`, made the head of `branch`; returns its 40-hex id."""
        commit = hashlib.sha1(repr((repo, len(self.commits), sorted(files.items()))).encode()).hexdigest()
        self.commits[repo, commit] = dict(files)
        self.branches[repo, branch] = commit
        self.messages[repo, commit] = message
        return commit

    def head(self, repo: str, branch: str = "main") -> dict[str, bytes]:
        """The files at the head of `branch`."""
        return self.commits[repo, self.branches[repo, branch]]

    def exists(self, repo: str) -> bool:
        return any(key[0] == repo for key in self.commits)

    def lookup(self, path: str) -> tuple[int, str | None, dict[str, str], bytes]:
        parts = unquote(path).lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return 404, None, {}, b""
        repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if not self.exists(repo):
            return 404, None, {"X-Error-Code": "RepoNotFound"}, b""
        commit = self.branches.get((repo, revision), revision)
        if (repo, commit) not in self.commits:
            return 404, None, {"X-Error-Code": "RevisionNotFound"}, b""
        data = self.commits[repo, commit].get(filename)
        if data is None:
            return 404, commit, {"X-Error-Code": "EntryNotFound"}, b""
        return 200, commit, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, data

    def api(self, path: str, body: bytes, authorization: str) -> tuple[int, dict[str, str], object]:
        """A POST to /api/...: (status, headers, JSON answer)."""
        parts = [unquote(part) for part in urlsplit(path).path.strip("/").split("/")]
        if parts == ["api", "validate-yaml"]:
            return 200, {}, {"errors": [], "warnings": []}
        if authorization.removeprefix("Bearer ") not in self.tokens:
            return (
                401,
                {"X-Error-Message": "Invalid credentials in Authorization header"},
                {"error": "Invalid token"},
            )
        if parts == ["api", "repos", "create"]:
            request = json.loads(body)
            repo = f"{request['organization']}/{request['name']}"
            if self.exists(repo):
                return 409, {}, {"error": "You already created this model repo", "url": f"{self.url}/{repo}"}
            self.publish(
                repo,
                {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                message="initial commit",
            )
            self.visibility[repo] = request.get("visibility", "public")
            return 200, {}, {"url": f"{self.url}/{repo}", "name": repo}
        if len(parts) != 6 or parts[:2] != ["api", "models"]:
            return 404, {}, {"error": "no such endpoint"}
        repo, action, revision = f"{parts[2]}/{parts[3]}", parts[4], parts[5]
        if not self.exists(repo):
            return 404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"}
        if action == "preupload":
            files = json.loads(body)["files"]
            return (
                200,
                {},
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                },
            )
        if action == "branch":
            if (repo, revision) in self.branches:
                return 409, {}, {"error": "Reference already exists"}
            self.branches[repo, revision] = self.branches[repo, "main"]
            return 200, {}, {}
        if action == "commit":
            if (repo, revision) not in self.branches:
                return 404, {"X-Error-Code": "RevisionNotFound"}, {"error": "Invalid rev id"}
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            files = dict(self.head(repo, revision))
            for line in lines[1:]:
                if line["key"] != "file" or line["value"].get("encoding") != "base64":
                    return 400, {}, {"error": f"this test Hub takes inline files only, got {line['key']}"}
                files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            commit = self.publish(repo, files, branch=revision, message=lines[0]["value"]["summary"])
            return (
                200,
                {},
                {
                    "commitUrl": f"{self.url}/{repo}/commit/{commit}",
                    "commitOid": commit,
                    "pullRequestUrl": None,
                },
            )
        return 404, {}, {"error": "no such endpoint"}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeHub

    def do_HEAD(self) -> None:
        self._download(send_body=False)

    def do_GET(self) -> None:
        self._download(send_body=True)

    def do_POST(self) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, headers, answer = self.server.api(self.path, body, self.headers.get("Authorization", ""))
        self._send(status, None, {"Content-Type": "application/json", **headers}, json.dumps(answer).encode())

    def _download(self, send_body: bool) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        status, commit, headers, data = self.server.lookup(self.path)
        self._send(status, commit, headers, data if send_body else b"", length=len(data))

    def _send(
        self, status: int, commit: str | None, headers: dict[str, str], data: bytes, length: int | None = None
    ) -> None:
        self.send_response(status)
        if commit is not None:
            self.send_header("X-Repo-Commit", commit)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


@contextlib.contextmanager
def serving() -> Iterator[FakeHub]:
    """A FakeHub answering on a free port for the length of the block (the `hub` fixture of conftest.py)."""
    server = FakeHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_python(
    args: list[str], hub: FakeHub, home: Path, *, offline: bool = False, token: str | None = None
) -> subprocess.CompletedProcess:
    """`python ARGS` with the Hub at `hub`, its cache under `home`, `token` as HF_TOKEN, and nothing inherited
    from the user's HF setup (no saved token either: HF_HOME is `home`)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(home),
        HF_HUB_OFFLINE="1" if offline else "0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
