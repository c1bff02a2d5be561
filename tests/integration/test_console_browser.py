"""The operator console in a real headless Chromium (Debian's `chromium`, driven by Playwright
for Python), served by the local stack's API front: sign in, the grid, a client/date with a
rejection, a DLQ redrive, a transformer disabled and enabled again.

Screenshots go to DATAHARVEST_SCREENSHOT_DIR when set (docs/ holds the README's), else to
the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import boto3
import pytest
from api_support import run_acme, token

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("DATAHARVEST_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium is not installed: make install (scripts/install-chromium.sh)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def client(local_stack, tmp_path_factory) -> str:
    name = f"web-{uuid.uuid4().hex[:8]}"
    run_acme(name, lambda t: local_stack.runner.wait_quiet(t), tmp_path_factory.mktemp("web"))
    return name


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = os.environ.get("DATAHARVEST_SCREENSHOT_DIR")
    return Path(folder) if folder else tmp_path


@pytest.fixture
def page(browser, local_stack):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(local_stack.info.api_url + "/")
    yield page
    context.close()
    assert errors == [], errors


def sign_in(page, home: Path, role: str = "operator", client: str | None = None) -> None:
    page.get_by_label("Bearer token").fill(token(home, role, client))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {role}").wait_for()


def test_operator_sees_the_grid_and_a_rejection(page, local_stack, client, shots) -> None:
    sign_in(page, local_stack.home)
    row = page.get_by_role("row", name=client)
    row.wait_for()
    cell = page.get_by_role("link", name=f"Open {client} 2024-01-03")
    assert "⚠" not in row.inner_text() or "error" in row.inner_text()
    page.screenshot(path=str(shots / "console-grid.png"), full_page=False)
    cell.click()
    page.get_by_role("heading", name=f"{client} · 2024-01-03").wait_for()
    rejections = page.get_by_role("table", name="rejections (1)")
    rejections.wait_for()
    assert "euro" in rejections.inner_text()
    assert "currency" in rejections.inner_text()
    page.screenshot(path=str(shots / "console-client.png"), full_page=True)


def test_grid_refreshes_live(page, local_stack, tmp_path) -> None:
    sign_in(page, local_stack.home)
    page.locator("#grid-title").wait_for()
    newcomer = f"live-{uuid.uuid4().hex[:8]}"
    source = Path(__file__).resolve().parents[2] / "examples/acme-bank/clients_20240102.csv"
    boto3.client("s3").upload_file(
        str(source), os.environ["LANDING_BUCKET"], f"{newcomer}/clients_20240102.csv"
    )
    # No reload: the grid's own refresh brings the new client in.
    page.get_by_role("row", name=newcomer).wait_for(timeout=30_000)


def test_partner_sees_only_its_client(page, local_stack, client) -> None:
    sign_in(page, local_stack.home, "partner", client)
    page.get_by_role("row", name=client).wait_for()
    assert page.get_by_role("link", name="Dead letters").is_hidden()
    assert len(page.locator("#grid tbody tr").all()) == 1


def test_operator_redrives_a_dead_letter(page, local_stack, client) -> None:
    from persistence_support import s3_event

    dlq_url = local_stack.info.export("PersistenceDeadLetterQueueUrl")
    boto3.client("sqs").send_message(
        QueueUrl=dlq_url,
        MessageBody=s3_event(f"{client}/clients_20240102.csv", "ObjectCreated:Put"),
    )
    sign_in(page, local_stack.home)
    page.get_by_role("link", name="Dead letters").click()
    page.get_by_role("cell", name=f"{client}/clients_20240102.csv").wait_for()
    page.get_by_role("button", name="Redrive persistence-dlq").first.click()
    page.get_by_text("No dead letters.").wait_for()
    page.get_by_text("Redrove 1 message(s)").wait_for()
    local_stack.runner.wait_quiet(120)


def test_operator_disables_and_enables_a_transformer(page, local_stack) -> None:
    from playwright.sync_api import expect

    from dataharvest import registry

    sign_in(page, local_stack.home)
    page.get_by_role("link", name="Transformers").click()
    toggle = page.get_by_role("button", name="tax_transformer enabled")
    toggle.wait_for()
    assert toggle.get_attribute("aria-pressed") == "true"
    page.get_by_label("Backfill when enabling or disabling").uncheck()
    toggle.click()
    page.get_by_text("tax_transformer disabled").wait_for()
    assert (
        page.get_by_role("button", name="tax_transformer enabled").get_attribute("aria-pressed")
        == "false"
    )
    assert registry.get("tax_transformer").enabled is False
    page.get_by_role("button", name="tax_transformer enabled").click()
    page.get_by_text("tax_transformer enabled (backfill").wait_for()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    assert registry.get("tax_transformer").enabled is True
