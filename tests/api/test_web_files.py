"""The web view's files as the API serves them (api/routes/web.py): the page, its modules and
the npm packages' files by name only, with the web view's content-security policy; any
other name is a 404, whatever it looks like."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.routes import web

STATIC = Path(web.STATIC_DIR)


def test_the_page_its_modules_and_packages_are_served_with_their_types(
    client: TestClient,
) -> None:
    page = client.get("/web/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # every script and style the page names is served, from this origin only
    names = re.findall(r'(?:src|href)="(/web/[^"]+)"', page.text)
    assert "/web/static/app.js" in names and "/web/vendor/uPlot.iife.min.js" in names
    for name in names:
        r = client.get(name)
        assert r.status_code == 200, name
    modules = sorted(p.name for p in STATIC.glob("*.js"))
    for m in modules:
        r = client.get(f"/web/static/{m}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        # each module's imports are modules that are served too
        for dep in re.findall(r'from "\./([^"]+)"', r.text):
            assert dep in modules, f"{m} imports {dep}, which is not served"
    assert client.get("/", follow_redirects=False).headers["location"] == "/web/"


def test_the_web_views_policy_allows_this_origin_only(client: TestClient) -> None:
    csp = client.get("/web/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp
    assert client.get("/web/static/app.js").headers["cache-control"] == "no-store"
    # the API itself keeps its own, stricter policy
    assert (
        client.get("/healthz").headers["content-security-policy"].startswith("default-src 'none'")
    )


def test_no_inline_script_or_style_in_the_page() -> None:
    """The policy refuses them; the page must not need them."""
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert "style=" not in html and "<style" not in html
    for js in STATIC.glob("*.js"):
        assert "innerHTML" not in js.read_text(), f"{js.name}: values go in as text"


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60))
def test_any_other_name_is_a_404(client: TestClient, name: str) -> None:
    if name in web.STATIC or name in web.VENDOR or name in (".", ".."):
        return
    for prefix in ("/web/static/", "/web/vendor/"):
        r = client.get(prefix + quote(name, safe=""))
        assert r.status_code in (400, 404), (name, r.status_code)
        assert r.headers["content-type"] == "application/problem+json"


TRICKS = ["/web/static/..%2F..%2Fapp.py", "/web/static/%2e%2e/routes/web.py",
          "/web/vendor/..%2Fpackage.json", "/web/static/index.html"]  # fmt: skip


@pytest.mark.parametrize("path", TRICKS)
def test_traversal_and_the_page_under_another_name_are_refused(
    client: TestClient, path: str
) -> None:
    assert client.get(path).status_code == 404


def test_a_missing_package_says_how_to_install_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(web.VENDOR, "uPlot.iife.min.js", tmp_path / "absent.js")
    r = client.get("/web/vendor/uPlot.iife.min.js")
    assert r.status_code == 503
    assert "make setup" in r.json()["detail"]
