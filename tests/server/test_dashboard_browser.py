"""The dashboard in a real browser: Playwright drives Debian's chromium (headless, the system
binary; `playwright install` is never run) against a real `cloudward server` on SQLite holding the
findings of a real `cloudward exposure scan` of a harness redis-server, run as a job through the
API. A person's path: log in through the form, see the scan's findings on the overview and in the
table, filter, open a finding, suppress it, and see it leave the open list; then start a scan
from the jobs page and watch it go from running to finished there and on the overview without
reloading (the pages' live refresh).

Screenshots of the overview and the jobs page are kept as test artifacts (`dashboard-overview.png`,
`dashboard-jobs.png`) in `$CLOUDWARD_TEST_ARTIFACTS`, or `test-artifacts/` at the top of the
repository (git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness.services import Service
from tests.server._dashboard import PASSWORD, make_user
from tests.server._support import ApiServer, start_api, wait_for_job

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def artifact_dir() -> Path:
    path = Path(os.environ.get("CLOUDWARD_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory, redis_server: Service) -> Iterator[dict[str, Any]]:
    """A server of its own (its overview shows only this scan), an analyst with a password, and
    the recorded findings of a real exposure scan of the harness redis."""
    server: ApiServer = start_api(f"sqlite:///{tmp_path_factory.mktemp('dash-browser')}/cloudward.db", "sqlite")
    try:
        with server.client("analyst") as analyst:
            started = analyst.post("/api/v1/jobs", json={"command": f"exposure scan 127.0.0.1 -p {redis_server.port}"})
            assert started.status_code == 202, started.text
            job = wait_for_job(analyst, started.json()["id"])
            assert job["status"] == "succeeded", job
            found = analyst.get("/api/v1/findings", params={"scan": job["scan_id"], "limit": 500}).json()["items"]
        assert any(f["rule_id"] == "redis.unauthenticated" for f in found), found
        yield {"server": server, "user": make_user(server, "analyst"), "target": f"127.0.0.1:{redis_server.port}",
               "findings": found, "scan": job["scan_id"]}
    finally:
        server.service.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module. Debian's package is installed by scripts/setup."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is missing: run scripts/setup (Debian package `chromium`)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


def test_log_in_filter_open_and_suppress_a_real_finding(scanned: dict[str, Any], browser: Any) -> None:
    base = scanned["server"].base
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=base)
    page = context.new_page()
    problems: list[str] = []  # script errors and Content-Security-Policy violations land here
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        # not logged in: the overview sends the visitor to the login form
        page.goto("/")
        assert page.url.startswith(f"{base}/login")
        page.get_by_label("Name", exact=True).fill(scanned["user"])
        page.get_by_label("Password", exact=True).fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").inner_text() == "Wrong name or password."
        problems.clear()  # chromium logs that refused login's 401 as a console error
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/")

        # the overview: the scan's findings on the chain, and a screenshot kept as an artifact
        assert page.get_by_role("heading", name="Attack chain").is_visible()
        redis_link = page.locator("a", has_text="unauthenticated Redis").first
        assert redis_link.is_visible()
        open_total = int(page.locator(".kpi", has_text="Open findings").locator(".kpi-value").inner_text())
        assert open_total == len(scanned["findings"])
        page.screenshot(path=str(artifact_dir() / "dashboard-overview.png"), full_page=True)

        # the table lists the scan's findings; filter by rule through the form, then by severity
        redis_link.click()
        page.wait_for_url(re.compile(r"/findings\?link=\d+$"))
        page.get_by_label("Rule", exact=True).fill("redis.*")
        page.locator("h1").click()  # focus off the field, so the page takes the "/" shortcut
        page.keyboard.press("/")  # the page script: "/" focuses the target filter
        page.keyboard.type(scanned["target"])
        page.get_by_role("button", name="Apply").click()
        page.wait_for_url(re.compile(r"rule=redis"))
        rows = page.locator("table.findings tbody tr")
        redis_rules = {f["rule_id"] for f in scanned["findings"] if f["rule_id"].startswith("redis.")}
        assert rows.count() == len(redis_rules) >= 1
        for i in range(rows.count()):
            assert scanned["target"] in rows.nth(i).inner_text()
        page.get_by_label("critical", exact=True).check()  # applies at once (data-autosubmit)
        page.wait_for_url(re.compile(r"severity=critical"))
        row = page.locator("tr", has=page.locator("td", has_text="redis.unauthenticated"))
        assert row.count() == 1
        fingerprint = row.get_attribute("data-fingerprint")
        assert fingerprint

        # the finding in full, then suppress it with a reason and an expiry
        row.locator("a.finding-link").click()
        page.wait_for_url(f"{base}/findings/{fingerprint}")
        assert page.get_by_role("heading", name="Evidence").is_visible()
        assert page.get_by_role("heading", name="Remediation").is_visible()
        assert scanned["scan"][:12] in page.locator("#hist-h + dl + table").inner_text()
        page.get_by_label("Reason").fill("lab redis, not reachable from outside; SEC-42")
        page.get_by_label("Expires").fill("7d")
        page.get_by_role("button", name="Suppress").click()
        page.wait_for_url(re.compile(r"notice=suppressed"))
        assert "Suppressed" in page.get_by_role("status").inner_text()
        assert "SEC-42" in page.locator("blockquote.reason").inner_text()

        # gone from the open list, there with the suppressed ones, and one fewer on the overview
        page.goto(f"/findings?target={scanned['target']}")
        assert page.locator(f'tr[data-fingerprint="{fingerprint}"]').count() == 0
        on_target = [f for f in scanned["findings"] if scanned["target"] in f["target"]["name"]]
        assert page.locator("table.findings tbody tr").count() == len(on_target) - 1
        page.get_by_label("Suppressed", exact=True).select_option("only")
        page.wait_for_url(re.compile(r"suppressed=only"))
        assert page.locator(f'tr[data-fingerprint="{fingerprint}"]').count() == 1
        page.goto("/")
        assert page.locator(".kpi", has_text="Suppressed").locator(".kpi-value").inner_text() == "1"
        assert problems == []
    finally:
        context.close()


@contextmanager
def held_port() -> Iterator[tuple[int, threading.Event]]:
    """A loopback port that accepts connections and holds them, silent, until the event is set;
    then it closes them all and closes every later one at once. A scan of it stays running for as
    long as the test needs to look at it, then ends by itself: the test never guesses a duration."""
    release, stop = threading.Event(), threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                conn = None
            if conn is not None:
                held.append(conn)
            if release.is_set():
                while held:
                    held.pop().close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], release
    finally:
        release.set()
        stop.set()
        thread.join(timeout=10)
        listener.close()
        for conn in held:
            conn.close()


def test_a_scan_started_on_the_jobs_page_is_seen_running_then_finished(scanned: dict[str, Any],
                                                                        browser: Any) -> None:
    base = scanned["server"].base
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=base)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        page.goto("/login?next=/jobs")
        page.get_by_label("Name", exact=True).fill(scanned["user"])
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/jobs")
        with held_port() as (port, release):
            command = f"exposure scan 127.0.0.1 -p {port} --timeout 60"
            page.get_by_label("Command").fill(command)
            page.get_by_role("button", name="Start").click()
            page.wait_for_url(re.compile(r"/jobs\?notice=started$"))
            row = f'tr[data-job]:has(td:text("{command}"))'
            page.wait_for_selector(f'{row}[data-status="running"]', timeout=60_000)  # queued -> running, live
            assert page.locator(row).locator("button", has_text="Cancel").is_visible()

            overview = context.new_page()  # the overview says a job runs, and follows it too
            overview.goto("/")
            assert "queued or running" in overview.locator("#overview-live .live-note").inner_text()

            navigations: list[str] = []
            for tab in (page, overview):
                tab.on("framenavigated", lambda frame: navigations.append(frame.url)
                       if frame.parent_frame is None else None)
            release.set()  # the scan's connections close: it finishes on its own
            page.wait_for_selector(f'{row}[data-status="succeeded"]', timeout=120_000)
            overview.wait_for_selector("#overview-live[data-live-active='0']", timeout=60_000)
        assert navigations == []  # nothing was reloaded: the pages' script fetched what changed
        finished = page.locator(row)
        assert finished.locator("button", has_text="Cancel").count() == 0
        scan_link = finished.locator("a", has_text="diff")
        assert scan_link.get_attribute("href", timeout=5_000).startswith("/scans/diff?after=")
        assert overview.locator("#overview-live .live-note").count() == 0
        page.screenshot(path=str(artifact_dir() / "dashboard-jobs.png"), full_page=True)
        assert problems == []
    finally:
        context.close()
