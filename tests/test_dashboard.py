"""`GET /dashboard` on the webhook server: the report page, live, behind STAKEFLOW_API_TOKEN.

A browser signs in through the form and keeps an HttpOnly cookie; the token never appears in a URL,
a log line or a cookie. The served page is the file's page: every chart drawn in headless Chromium,
no request leaving 127.0.0.1 (the page's Content-Security-Policy forbids it too), figures equal to
`costs --json` for the same store.
"""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest
from click.testing import CliRunner

from stakeflow.cli import cli
from stakeflow.webhooks.app import create_app
from stakeflow.webhooks.dashboard import COOKIE, MAX_LOGIN_BYTES, session_value
from tests.browser import CHROMIUM, browse, figures, wait_for_charts
from tests.report_data import write_dataset
from tests.support import make_settings
from tests.webhook_support import ServerThread

TOKEN = f"dash-{uuid.uuid4().hex}"


@pytest.fixture
def settings(tmp_path, monkeypatch):
    settings = make_settings(tmp_path)
    monkeypatch.setenv("STAKEFLOW_HOME", str(settings.home))
    monkeypatch.delenv("STAKEFLOW_TRACES", raising=False)
    write_dataset(settings.traces_path, days=9, runs_per_day=12)
    return settings


@pytest.fixture
def server(settings):
    with ServerThread(create_app(settings, environ={"STAKEFLOW_API_TOKEN": TOKEN})) as s:
        yield s


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
async def test_a_browser_signs_in_with_the_form_and_sees_every_chart(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="stakeflow.webhooks")
    async with browse() as (page, visit):
        first = await page.goto(f"{server.url}/dashboard")
        assert first.status == 401 and await page.locator(".chart").count() == 0
        await page.fill("#token", "not-the-token")
        await page.click("button[type=submit]")
        assert "not the server's STAKEFLOW_API_TOKEN" in await page.inner_text("#login-error")
        assert await page.context.cookies() == []
        visit.errors.clear()  # the form's own 401 answers, logged by the browser as failed loads
        await page.fill("#token", TOKEN)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{server.url}/dashboard")
        charts = await wait_for_charts(page)
        found = await figures(page)
        cookies = await page.context.cookies()
        script_cookies = await page.evaluate("document.cookie")
        shot = tmp_path / "dashboard.png"
        await page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
    assert {c["name"] for c in charts} == {"spend", "agreement", "saving", "events"}
    assert all(c["rendered"] == "true" and c["marks"] > 0 for c in charts), charts
    assert visit.refused == [] and visit.errors == [], (visit.refused, visit.errors)
    assert not any(TOKEN in url for url in visit.requests)
    [cookie] = cookies
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        COOKIE,
        True,
        "Strict",
        "/dashboard",
    )
    assert TOKEN not in cookie["value"] and script_cookies == ""
    assert TOKEN not in caplog.text
    out = CliRunner().invoke(cli, ["costs", "--since", "30d", "--json"], catch_exceptions=False)
    costs = json.loads(out.stdout)
    assert float(found["total_usd"]) == pytest.approx(costs["total_usd"], abs=1e-9)
    assert float(found["saved_usd"]) == pytest.approx(costs["saved_usd"], abs=1e-9)
    assert int(found["calls"]) == costs["calls"]


def test_the_token_never_rides_in_a_url_and_a_wrong_one_gets_the_form(server, caplog):
    caplog.set_level(logging.INFO, logger="stakeflow.webhooks")
    with httpx.Client(base_url=server.url) as http:
        r = http.get("/dashboard", params={"token": TOKEN})
        assert r.status_code == 400 and "never goes in a URL" in r.text and "data-chart" not in r.text
        r = http.get("/dashboard", params={"api_token": TOKEN}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 400  # refused even with the right header: the URL already leaked it
        r = http.get("/dashboard", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and 'name="token"' in r.text
        r = http.post("/dashboard/login", data={"token": "wrong"})
        assert r.status_code == 401 and "set-cookie" not in r.headers
        r = http.post("/dashboard/login", content=b"token=" + b"x" * MAX_LOGIN_BYTES)
        assert r.status_code == 413
        r = http.post("/dashboard/login", content="&".join(f"f{i}=1" for i in range(50)).encode())
        assert r.status_code == 400
    assert TOKEN not in caplog.text


def test_signing_in_sets_a_cookie_that_is_not_the_token_and_signing_out_clears_it(server):
    with httpx.Client(base_url=server.url) as http:
        r = http.post("/dashboard/login", data={"token": TOKEN})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard"
        header = r.headers["set-cookie"]
        assert f"{COOKIE}={session_value(TOKEN)}" in header and TOKEN not in header
        assert all(part in header for part in ("HttpOnly", "SameSite=strict", "Path=/dashboard"))
        r = http.get("/dashboard", params={"since": "7d", "agent": "triage"})
        assert r.status_code == 200 and 'data-chart="spend"' in r.text and "agent <b>triage</b>" in r.text
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        assert http.get("/dashboard", params={"since": "soon"}).status_code == 400
        r = http.get("/dashboard", params={"since": "99999999999d"})
        assert r.status_code == 400 and "use --since all" in r.text
        r = http.get("/dashboard", params={"agent": "<script>alert(1)</script>"})
        assert r.status_code == 200 and "<script>alert(1)" not in r.text and "&lt;script&gt;alert(1)" in r.text
        r = http.post("/dashboard/logout")
        assert r.status_code == 303 and f'{COOKIE}=""' in r.headers["set-cookie"]
        assert http.get("/dashboard").status_code == 401


def test_bearer_works_for_scripts_and_no_token_configured_disables_it(settings):
    with ServerThread(create_app(settings, environ={"STAKEFLOW_API_TOKEN": TOKEN})) as s:
        r = httpx.get(f"{s.url}/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    with ServerThread(create_app(settings, environ={})) as s:
        r = httpx.get(f"{s.url}/dashboard")
        assert r.status_code == 401 and "set STAKEFLOW_API_TOKEN" in r.text
        assert httpx.post(f"{s.url}/dashboard/login", data={"token": ""}).status_code == 401
