"""A journalist's whole journey in a real Chromium, against a real gateway and real Datasettes.

Register with a new team, watch its Datasette come up, arrive signed in on the team's
subdomain, upload a CSV with ZIP codes, review the detected types, import, see the table with
its leading zeros, sign out, and find the team closed to a second user. Every gateway page on
the way is checked for labels, keyboard reach and console errors (tests/e2e/browser.py).
Screenshots: artifacts/screenshots/<test>/.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from gateway.config import Config
from tests.auth_support import make_user
from tests.conftest import Running, StartGateway
from tests.e2e.browser import DOMAIN, Shots, Watch, check_page

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

ANN = ("ann@example.org", "a long and fine passphrase")
BEA = ("bea@example.org", "another quite long passphrase")
TEAM = "newsroom"
READY = 90_000  # ms: a team's Datasette starting on a machine shared with other test runs

# Towns with ZIP codes whose leading zeros must survive, then enough rows for the progress
# bars to have something to show. Columns: zip (TEXT), town (TEXT), pop (INTEGER), share (REAL).
HEAD = [("00601", "Adjuntas", 18181, 0.5), ("02139", "Cambridge", 118403, 1.25)]
ROWS = HEAD + [(f"{i:05d}", f"Town {i}", 1000 + i, i / 4) for i in range(3000, 5000)]
CSV = "zip,town,pop,share\n" + "".join(f"{z},{t},{p},{s}\n" for z, t, p, s in ROWS)

# A real drop: a DataTransfer carrying a File, dispatched on the drop zone as the browser does.
DROP = """
([name, text]) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([text], name, { type: "text/csv" }));
  const zone = document.getElementById("dropzone");
  for (const type of ["dragenter", "dragover", "drop"]) {
    const init = { dataTransfer: transfer, bubbles: true, cancelable: true };
    zone.dispatchEvent(new DragEvent(type, init));
  }
}
"""

# Record every (bar value, status text) the upload row shows, as a person watching it would.
RECORD_PROGRESS = """
() => {
  window.progressSeen = [];
  const panel = document.getElementById("progress");
  const note = () => {
    const bar = panel.querySelector("progress");
    const status = panel.querySelector(".status");
    if (!bar || !status) return;
    const last = window.progressSeen.at(-1);
    const now = [bar.value, status.textContent];
    if (!last || last[0] !== now[0] || last[1] !== now[1]) window.progressSeen.push(now);
  };
  new MutationObserver(note).observe(panel, { subtree: true, childList: true, attributes: true,
                                               characterData: true });
  const timer = setInterval(note, 5);
  setTimeout(() => clearInterval(timer), 60000);
}
"""


async def sign_in(page: Page, watch: Watch, email: str, password: str, where: str) -> None:
    await check_page(page, watch, where, first="input#email", submit="Sign in")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def sign_out(page: Page, gw: Running) -> None:
    await page.goto(f"{gw.config.base_url}/dashboard")
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{gw.config.base_url}/login")


async def actor(page: Page, gw: Running, team: str) -> dict | None:
    await page.goto(gw.config.team_url(team) + "/-/actor.json")
    return json.loads(await page.inner_text("body"))["actor"]


# gateway.test: a registrable domain, where the Domain cookie itself reaches every team host.
# localhost: the default (`make run`); Chromium keeps its Domain cookie host-only, so team hosts
# get the session through the sign-in handoff (docs/auth.md).
@pytest.mark.parametrize("domain", [DOMAIN, "localhost"])
async def test_journey(
    e2e_config: Config, start_gateway: StartGateway, page: Page, watch: Watch, domain: str
) -> None:
    from playwright.async_api import expect

    gw = await start_gateway(e2e_config.replace(domain=domain))
    base, team_url = gw.config.base_url, gw.config.team_url(TEAM)
    shots = Shots(f"journey-{domain}", docs=domain == DOMAIN)

    # 1. The apex: register a new account with a new team.
    await page.goto(base + "/")
    await check_page(page, watch, "apex")
    await page.get_by_role("link", name="Create an account").first.click()
    await page.wait_for_url(base + "/register")
    await check_page(page, watch, "register", first="input#email", submit="Create account")
    await page.get_by_label("Email").fill(ANN[0])
    await page.get_by_label("Password").fill(ANN[1])
    # The browser itself refuses a bad team name (the pattern is a valid `v`-mode regexp).
    team_field = page.get_by_label("Team name")
    await team_field.fill("Bad_Team")
    assert await team_field.evaluate("e => e.validity.patternMismatch")
    await team_field.fill(TEAM)
    assert await team_field.evaluate("e => e.validity.valid")
    await shots.take(page, "register", docs="01-register")
    await page.get_by_role("button", name="Create account and team").click()

    # 2. The dashboard shows the team's instance becoming ready (the page refreshes itself).
    await page.wait_for_url(base + "/dashboard")
    await shots.take(page, "dashboard-starting")
    badge = page.locator(f"#team-{TEAM} .badge").first
    await expect(badge).to_have_text("up", timeout=READY)
    await check_page(page, watch, "dashboard")
    await shots.take(page, "dashboard-ready", docs="02-dashboard")

    # 3. The team's subdomain: Datasette, signed in as that user (one sign-in, on the apex).
    await page.get_by_role("link", name="Open Datasette").click()
    await page.wait_for_url(team_url + "/")
    await expect(page.locator("footer")).to_contain_text("Datasette")
    await expect(page.locator("header nav")).to_contain_text(ANN[0])  # the actor's display
    watch.check("datasette home")
    await shots.take(page, "datasette-signed-in", docs="03-datasette")
    me = await actor(page, gw, TEAM)
    assert me is not None and me["email"] == me["display"] == ANN[0], me
    assert me["id"].startswith("u_"), me

    # 4. The upload page: drop a CSV and watch the upload's progress bar.
    await page.goto(team_url + "/-/upload-csv")
    await check_page(page, watch, "upload", first="input#files", submit="Upload")
    await page.evaluate(RECORD_PROGRESS)
    await page.evaluate(DROP, ["towns.csv", CSV])
    review = page.get_by_role("link", name="Review the columns and import")
    await review.wait_for(timeout=READY)
    # One bar per file: the upload fills it (XHR progress), then the job's analysis does.
    seen = await page.evaluate("() => window.progressSeen")
    assert seen[0] == [0, "uploading"], seen
    assert [1, "uploading"] in seen, f"the upload never completed the bar: {seen}"
    assert seen[-1] == [1, "Review the columns and import"], seen
    watch.check("upload after drop")
    await shots.take(page, "uploaded", docs="04-upload")

    # 5. The preview shows the detected types; ZIP stays text; import.
    await review.click()
    await expect(page.get_by_role("heading", name="Review")).to_be_visible()
    await expect(page.locator("table.preview")).to_contain_text("00601")
    types = [await page.locator(f"#type-{i}").input_value() for i in range(4)]
    assert types == ["TEXT", "TEXT", "INTEGER", "REAL"], types
    # Leading zeros: the preview offers no numeric type for the ZIP column at all.
    assert await page.locator("#type-0 option").all_inner_texts() == ["TEXT"]
    await expect(page.get_by_text("text because of “00601”")).to_be_visible()
    await check_page(page, watch, "preview", first="input#table", submit="Import")
    await page.get_by_label("Table name").fill("towns")
    await shots.take(page, "preview", docs="05-preview", at="label[for=table]")
    await page.get_by_role("button", name="Import").click()
    link = page.locator("#table-link")
    await link.wait_for(timeout=READY)
    await expect(page.locator("#job")).to_contain_text(f"Imported {len(ROWS):,} rows")
    await check_page(page, watch, "import done")
    await shots.take(page, "imported")

    # 6. The table in Datasette, with its rows and their leading zeros.
    await link.click()
    await page.wait_for_url(team_url + "/data/towns")
    await expect(page.locator("table.rows-and-columns")).to_contain_text("00601")
    await expect(page.locator("h3").first).to_contain_text(f"{len(ROWS):,} rows")
    watch.check("datasette table")
    await shots.take(page, "table", docs="06-table")
    with sqlite3.connect(gw.config.teams_dir / TEAM / "data.db") as db:
        stored = db.execute("SELECT zip, town, pop, share FROM towns ORDER BY rowid").fetchall()
        assert stored == ROWS
        assert db.execute("SELECT DISTINCT typeof(zip) FROM towns").fetchall() == [("text",)]

    # 7. Sign out; the team's subdomain now sends the browser to the login page.
    await sign_out(page, gw)
    await page.goto(team_url + "/data/towns")
    assert page.url.startswith(base + "/login?next="), page.url
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await shots.take(page, "signed-out-redirect")

    # 8. A second user signs in: the first team answers 403 with a clear page.
    make_user(gw, BEA[0], {}, password=BEA[1])
    await sign_in(page, watch, *BEA, "login")
    await page.wait_for_url(lambda url: "/login" not in url)
    # Chromium logs the 403 document as an error. On localhost the team host cannot see the
    # session, so the apex's handoff (/-/sso) is the one that answers 403.
    watch.expect(team_url + "/data/towns")
    watch.expect(f"{base}/-/sso?next={quote(team_url + '/data/towns', safe='')}")
    response = await page.goto(team_url + "/data/towns")
    assert response is not None and response.status == 403
    await expect(page.locator("body")).to_contain_text(f"not a member of the team {TEAM}")
    watch.check("403")
    await shots.take(page, "other-user-forbidden", docs="07-forbidden")


async def test_wrong_password_then_invite(
    e2e_config: Config, start_gateway: StartGateway, page: Page, watch: Watch, tmp_path: Path
) -> None:
    """A refused password says so clearly; an owner's invitation link makes a member, who
    sees the team and uploads to it through the file picker."""
    from playwright.async_api import expect

    gw = await start_gateway(e2e_config, teams=(TEAM,))
    base, team_url = gw.config.base_url, gw.config.team_url(TEAM)
    make_user(gw, ANN[0], {TEAM: "owner"}, password=ANN[1])
    make_user(gw, BEA[0], {}, password=BEA[1])
    shots = Shots("invite")

    # A wrong password: a 400 and a clear message tied to the form, the email kept.
    await page.goto(base + "/login")
    watch.expect(base + "/login")  # Chromium logs the refused form's 400 document as an error
    await sign_in(page, watch, ANN[0], "not the password at all", "login")
    await expect(page.get_by_role("alert")).to_have_text("The email or password is incorrect.")
    assert await page.get_by_label("Email").input_value() == ANN[0]
    assert await page.locator("form[aria-describedby=form-error]").count() == 1
    await check_page(page, watch, "login refused", first="input#email", submit="Sign in")
    await shots.take(page, "wrong-password", docs="08-wrong-password")

    # The owner signs in (by keyboard: Enter submits) and makes an invitation link.
    await page.get_by_label("Password").fill(ANN[1])
    await page.get_by_label("Password").press("Enter")
    await page.wait_for_url(base + "/dashboard")
    await page.get_by_role("link", name="Members and API tokens").click()
    await page.wait_for_url(f"{base}/teams/{TEAM}")
    await check_page(page, watch, "team", first="select#invite-role", submit="Create invitation")
    await page.get_by_role("button", name="Create invitation link").click()
    link = await page.get_by_label("Invitation link").input_value()
    assert link.startswith(f"{base}/invite/"), link
    await check_page(page, watch, "team with link")
    await shots.take(page, "invitation-link", docs="09-invite")
    await sign_out(page, gw)

    # The invitee opens the link (it names the team and who invites), signs in, and joins.
    await page.goto(link)
    await expect(page.locator("main")).to_contain_text(f"{ANN[0]} invites you")
    await page.get_by_role("link", name="Sign in to join").click()
    assert page.url.startswith(base + "/login?next="), page.url
    await sign_in(page, watch, *BEA, "login for the invitation")
    await page.wait_for_url(link)
    await expect(page.locator("main")).to_contain_text(f"join the team {TEAM} as member")
    await check_page(page, watch, "invitation", submit=f"Join {TEAM}")
    await shots.take(page, "invitation")
    await page.get_by_role("button", name=f"Join {TEAM}").click()
    await page.wait_for_url(f"{base}/teams/{TEAM}")
    members = page.locator("section[aria-labelledby=members] tbody")
    await expect(members).to_contain_text(BEA[0])
    await shots.take(page, "joined")

    # The new member sees the team on the dashboard and in its Datasette, as herself.
    await page.goto(base + "/dashboard")
    await expect(page.locator(f"#team-{TEAM}")).to_contain_text(TEAM)
    await expect(page.locator(f"#team-{TEAM} .badge").first).to_have_text("up", timeout=READY)
    await page.get_by_role("link", name="Open Datasette").click()
    await page.wait_for_url(team_url + "/")
    watch.check("datasette for the new member")
    me = await actor(page, gw, TEAM)
    assert me is not None and me["email"] == BEA[0], me

    # The new member uploads too, through the file picker this time: a tab-separated file.
    tsv = tmp_path / "schools.tsv"
    tsv.write_text("id\tschool\tpupils\n007\tNorth\t310\n012\tSouth\t95\n")
    await page.goto(team_url + "/-/upload-csv")
    async with page.expect_file_chooser() as chooser:
        await page.get_by_label("Files").click()
    await (await chooser.value).set_files(tsv)
    await page.get_by_role("button", name="Upload").click()
    review = page.get_by_role("link", name="Review the columns and import")
    await review.wait_for(timeout=READY)
    await review.click()
    await expect(page.locator("form").first).to_contain_text("delimiter tab")
    await page.get_by_role("button", name="Import").click()
    await page.locator("#table-link").click()
    await page.wait_for_url(team_url + "/data/schools")
    await expect(page.locator("table.rows-and-columns")).to_contain_text("007")
    watch.check("member's upload")
    with sqlite3.connect(gw.config.teams_dir / TEAM / "data.db") as db:
        rows = db.execute("SELECT id, school, pupils FROM schools ORDER BY rowid").fetchall()
        assert rows == [("007", "North", 310), ("012", "South", 95)]

    # The link worked once.
    await page.goto(base + "/dashboard")
    watch.expect(link)
    response = await page.goto(link)
    assert response is not None and response.status == 400
    await expect(page.get_by_role("alert")).to_contain_text("already used")
    watch.check("used invitation")
