"""The operator console in a real headless Chromium (Debian's `chromium`, driven by Playwright
for Python), served by the local stack's API front: sign in, the grid, a client/date with a
rejection, a DLQ redrive, a transformer disabled and enabled again, a partner's upload (the
browser POSTs to the landing bucket) followed until it is loaded or rejected.

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
from api_support import EXAMPLES, run_acme, token

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


# -- upload ------------------------------------------------------------------------------------


def open_upload(page, local_stack) -> str:
    from playwright.sync_api import expect

    partner = f"up-{uuid.uuid4().hex[:8]}"
    sign_in(page, local_stack.home, "partner", partner)
    page.get_by_role("link", name="Upload").click()
    page.get_by_role("heading", name="Upload a file").wait_for()
    # A partner uploads for its own client only.
    expect(page.get_by_label("Client", exact=True)).to_have_value(partner)
    assert not page.get_by_label("Client", exact=True).is_editable()
    return partner


def landing_versions(prefix: str) -> list[dict]:
    listed = boto3.client("s3").list_object_versions(
        Bucket=os.environ["LANDING_BUCKET"], Prefix=prefix
    )
    return listed.get("Versions", [])


def test_partner_uploads_a_file_and_sees_it_loaded(page, local_stack, shots) -> None:
    from playwright.sync_api import expect

    from dataharvest import db

    partner = open_upload(page, local_stack)
    page.get_by_label("File", exact=True).set_input_files(str(EXAMPLES / "accounts_20240102.csv"))
    page.get_by_text("accounts of business date 2024-01-02").wait_for()
    page.get_by_role("button", name="Upload", exact=True).click()
    key = f"{partner}/accounts_20240102.csv"
    row = page.get_by_role("row", name=key)
    # The browser POSTed to the landing bucket itself; the console follows that version's load.
    expect(row.get_by_role("cell").first).to_have_text("loaded", timeout=180_000)
    expect(row).to_contain_text("4 rows loaded, 0 rejected")
    (version,) = landing_versions(key)
    with db.connect() as conn:
        loaded = conn.execute(
            "SELECT status, rows_loaded FROM audit.file_loads "
            "WHERE source_key = %s AND source_version = %s",
            (key, version["VersionId"]),
        ).fetchall()
    assert loaded == [("loaded", 4)]
    assert [c.inner_text() for c in row.get_by_role("cell").all()[1:3]] == ["4", "0"]
    page.screenshot(path=str(shots / "console-upload.png"), full_page=True)


def test_partner_sees_why_an_upload_is_refused_or_rejected(page, local_stack, tmp_path) -> None:
    from playwright.sync_api import expect

    partner = open_upload(page, local_stack)
    misnamed = tmp_path / "accounts-2024-01-02.csv"
    misnamed.write_bytes((EXAMPLES / "accounts_20240102.csv").read_bytes())
    page.get_by_label("File", exact=True).set_input_files(str(misnamed))
    reason = "accounts-2024-01-02.csv: not an upload name; expected {entity}_{YYYYMMDD}.csv"
    page.get_by_text(reason).wait_for()
    page.get_by_role("button", name="Upload", exact=True).click()
    # Refused in the page: nothing was signed or sent.
    page.get_by_text(reason).wait_for()
    expect(page.get_by_role("table", name="Uploads from this page")).to_contain_text(
        "Nothing uploaded yet."
    )
    assert landing_versions(f"{partner}/") == []

    impossible = tmp_path / "accounts_20240231.csv"
    impossible.write_bytes(misnamed.read_bytes())
    page.get_by_label("File", exact=True).set_input_files(str(impossible))
    page.get_by_text("accounts_20240231.csv: 20240231 is not a calendar date").wait_for()

    invalid = tmp_path / "accounts_20240103.csv"
    invalid.write_text("record_id,account_number\n1,50001\n")
    page.get_by_label("File", exact=True).set_input_files(str(invalid))
    page.get_by_role("button", name="Upload", exact=True).click()
    row = page.get_by_role("row", name=f"{partner}/accounts_20240103.csv")
    expect(row.get_by_role("cell").first).to_have_text("rejected", timeout=180_000)
    expect(row).to_contain_text("rejected whole: the header lacks required column(s)")
    expect(row).to_contain_text("cash_balance")


def test_operator_uploads_two_files_for_a_client_one_after_the_other(page, local_stack) -> None:
    from playwright.sync_api import expect

    client = f"op-{uuid.uuid4().hex[:8]}"
    sign_in(page, local_stack.home)
    page.get_by_role("link", name="Upload").click()
    box = page.get_by_label("Client", exact=True)
    assert box.is_editable()  # an operator names the client
    box.fill(client)
    files = (("clients_20240102.csv", 3), ("portfolios_20240102.csv", 6))
    for name, _ in files:
        # The second goes while the first may still be loading.
        page.get_by_label("File", exact=True).set_input_files(str(EXAMPLES / name))
        page.get_by_role("button", name="Upload", exact=True).click()
        page.get_by_role("row", name=f"{client}/{name}").wait_for()
        expect(box).to_have_value(client)
    for name, rows in files:
        row = page.get_by_role("row", name=f"{client}/{name}")
        expect(row.get_by_role("cell").first).to_have_text("loaded", timeout=180_000)
        expect(row).to_contain_text(f"{rows} rows loaded, 0 rejected")
