"""m42d.web.pages: which files the listener serves, with which headers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from m42d.web import pages

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "m42d" / "web"
HOST = "relay.example.org"


def get(
    target: str, *, host: str | None = HOST, tls: bool = True, method: str = "GET"
) -> pages.Response:
    return pages.respond(method, target, host=host, tls=tls)


def csp_directives(response: pages.Response) -> dict[str, list[str]]:
    csp = response.header("content-security-policy")
    assert csp is not None
    out: dict[str, list[str]] = {}
    for part in csp.split(";"):
        name, *values = part.split()
        assert name not in out, f"directive {name} twice"
        out[name] = values
    return out


def test_root_is_the_page() -> None:
    response = get("/")
    assert response.status == 200
    assert response.header("content-type") == "text/html; charset=utf-8"
    assert response.body == (WEB / "index.html").read_bytes()
    assert response.header("content-length") == str(len(response.body))


def test_the_page_has_one_address() -> None:
    """The page derives the relay URL of a new room from its own location."""
    assert get("/index.html").status == 404


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
        ("/icon.svg", "image/svg+xml"),
        ("/lib/link.js", "text/javascript; charset=utf-8"),
        ("/lib/sink-worker.js", "text/javascript; charset=utf-8"),
        ("/ui/chat.js", "text/javascript; charset=utf-8"),
        ("/vendor/uqr/index.mjs", "text/javascript; charset=utf-8"),
    ],
)
def test_static_files_with_their_types(path: str, content_type: str) -> None:
    response = get(path)
    assert response.status == 200
    assert response.header("content-type") == content_type
    assert response.body == (WEB / path.lstrip("/")).read_bytes()


def test_every_module_the_page_imports_is_served() -> None:
    """Follow the import graph from app.js: a module left out of the table breaks the page."""
    served = pages.served_paths()
    seen: set[str] = set()
    todo = ["/app.js", "/lib/sink-worker.js"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        assert path in served, path
        text = (WEB / path.lstrip("/")).read_text(encoding="utf-8")
        base = path.rsplit("/", 1)[0]
        for spec in re.findall(r'^\s*(?:import|export)\b[^"\']*?from\s+"(\.[^"]+)"', text, re.M):
            parts = [*base.split("/"), *spec.split("/")]
            resolved: list[str] = []
            for part in parts:
                if part in ("", "."):
                    continue
                if part == "..":
                    resolved.pop()
                else:
                    resolved.append(part)
            todo.append("/" + "/".join(resolved))
    assert len(seen) >= 20


def test_the_word_list_is_served_at_its_fixed_path() -> None:
    response = get(pages.WORDLIST_PATH)
    assert response.status == 200
    assert response.header("content-type") == "text/plain; charset=utf-8"
    words = response.body.decode("utf-8").splitlines()
    assert len(words) == 7776
    # The page fetches it by the name in ui/engine.js.
    engine_js = (WEB / "ui" / "engine.js").read_text(encoding="utf-8")
    assert f'export const WORDLIST_URL = "{pages.WORDLIST_PATH.lstrip("/")}";' in engine_js


@pytest.mark.parametrize(
    "path",
    [
        "/ui/fake-engine.js",  # the UI tests' engine
        "/web/__init__.py",
        "/__init__.py",
        "/pages.py",
        "/vendor/uqr/LICENSE",
        "/vendor/uqr/index.d.mts",
        "/vendor/uqr/README.md",
        "/lib/",
        "/lib",
        "/ui/",
        "//",
        "/nonexistent.js",
        "/../pages.py",
        "/lib/../pages.py",
        "/lib/..%2fpages.py",
        "/%2e%2e/pages.py",
        "/lib%2flink.js",
        "/lib\\link.js",
        "/app.js/",
        "/APP.JS",
        "/app.js%00",
        "/eff_large_wordlist.txt/",
        "/crypto/data/eff_large_wordlist.txt",
    ],
)
def test_nothing_else_is_served(path: str) -> None:
    response = get(path)
    assert response.status == 404
    assert response.body == b"not found\n"
    assert response.header("content-type") == "text/plain; charset=utf-8"


def test_served_paths_are_exactly_the_page_files() -> None:
    on_disk = {
        "/" + str(p.relative_to(WEB))
        for p in WEB.rglob("*")
        if p.is_file() and p.suffix in pages.CONTENT_TYPES and "__pycache__" not in p.parts
    }
    expected = (on_disk - pages.NOT_SERVED) | {pages.INDEX_PATH, pages.WORDLIST_PATH}
    assert pages.served_paths() == expected


def test_query_is_ignored() -> None:
    assert get("/?utm=1").body == get("/").body
    assert get("/app.js?v=2").status == 200


def test_head_has_get_headers_and_no_body() -> None:
    full = get("/app.js")
    head = get("/app.js", method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers == full.headers
    assert get("/missing", method="HEAD").body == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "get"])
def test_other_methods_are_refused(method: str) -> None:
    response = get("/", method=method)
    assert response.status == 405
    assert response.header("allow") == "GET, HEAD"
    assert response.header("content-security-policy") is not None


@pytest.mark.parametrize("target", ["*", "http://relay.example.org/", "app.js", "/" + "a" * 3000])
def test_bad_targets_are_400(target: str) -> None:
    assert get(target).status == 400


def test_security_headers_on_every_response() -> None:
    for response in (get("/"), get("/app.js"), get("/missing"), get("/", method="POST")):
        assert response.header("x-content-type-options") == "nosniff"
        assert response.header("referrer-policy") == "no-referrer"
        assert response.header("cross-origin-opener-policy") == "same-origin"
        assert response.header("cross-origin-resource-policy") == "same-origin"
        assert response.header("cache-control") == "no-store"
        assert response.header("x-frame-options") == "DENY"
        policy = response.header("permissions-policy")
        assert policy is not None
        assert "camera=()" in policy
        assert "microphone=()" in policy
        assert "geolocation=()" in policy
        assert "clipboard-write=(self)" in policy


def test_csp_is_strict() -> None:
    directives = csp_directives(get("/"))
    assert directives == {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "connect-src": ["'self'", f"wss://{HOST}"],
        "worker-src": ["'self'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
        "require-trusted-types-for": ["'script'"],
        "trusted-types": [pages.TRUSTED_TYPES_POLICY],
    }
    csp = get("/").header("content-security-policy") or ""
    for loophole in ("unsafe-inline", "unsafe-eval", "data:", "blob:", "*", "http:", "https:"):
        assert loophole not in csp.replace(f"wss://{HOST}", ""), loophole


def test_trusted_types_policy_name_matches_the_page() -> None:
    sink_js = (WEB / "lib" / "sink.js").read_text(encoding="utf-8")
    assert f'export const TRUSTED_TYPES_POLICY = "{pages.TRUSTED_TYPES_POLICY}";' in sink_js


@pytest.mark.parametrize(
    ("host", "tls", "sockets"),
    [
        ("relay.example.org", True, ["wss://relay.example.org"]),
        ("Relay.Example.ORG:8443", True, ["wss://relay.example.org:8443"]),
        # A plain listener may sit behind a TLS proxy: the page is https, its socket wss.
        ("127.0.0.1:8042", False, ["ws://127.0.0.1:8042", "wss://127.0.0.1:8042"]),
        ("[::1]:8042", False, ["ws://[::1]:8042", "wss://[::1]:8042"]),
        ("localhost", False, ["ws://localhost", "wss://localhost"]),
    ],
)
def test_connect_src_names_the_listener(host: str, tls: bool, sockets: list[str]) -> None:
    assert csp_directives(get("/", host=host, tls=tls))["connect-src"] == ["'self'", *sockets]


def test_host_as_bytes_from_h11() -> None:
    response = pages.respond(b"GET", b"/", host=b"relay.example.org", tls=True)
    assert response.status == 200
    assert csp_directives(response)["connect-src"] == ["'self'", "wss://relay.example.org"]


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "relay.example.org; script-src *",
        "relay.example.org wss://evil.example",
        "evil.example\r\nx-injected: 1",
        "relay.example.org:0",
        "relay.example.org:",
        "relay.example.org:123456",
        "relay.example.org:65536",
        "user@relay.example.org",
        "-relay.example.org",
        "relay..example.org",
        "relay.example.org.",
        "[::1",
        "[::1]x",
        "relay_example.org",
        "rélay.example.org",
        "a" * 300,
    ],
)
def test_a_bad_host_gets_400_with_a_locked_csp(host: str | None) -> None:
    response = get("/", host=host)
    assert response.status == 400
    assert response.body == b"bad request: missing or invalid Host header\n"
    csp = response.header("content-security-policy") or ""
    assert csp.startswith("default-src 'none'")
    assert "connect-src" not in csp
    if host:
        assert all(host.lower() not in value for _, value in response.headers)


def test_responses_are_reused_not_reread() -> None:
    """The table is read once: two responses share the same body object."""
    assert get("/app.js").body is get("/app.js").body
