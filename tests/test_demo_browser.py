"""The demo page in headless Chromium, against the demo app on a real uvicorn server on 127.0.0.1.

Driven with Playwright's Python package and the system Chromium (``/usr/bin/chromium``, Debian's
``chromium`` package, which .ci/run installs): no browser is ever downloaded. Playwright gives each
launch a fresh temporary profile (``--user-data-dir``). Without Chromium these tests fail; on a
developer machine, and never under CI, ``TOOLKIT_SKIP_BROWSER_TESTS=1`` skips them instead.

Screenshots go to test-artifacts/: the chat (demo.png), and the page after a server stop, after Leave,
and after the rate limit closed the connection (demo-server-stopped.png, demo-left.png, demo-rate-limited.png).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect, sync_playwright
from toolkit_demo import create_app, local_origins

from tests.server import LiveServer, SwitchableApp, run_server

pytestmark = pytest.mark.server

CHROMIUM: Final = Path("/usr/bin/chromium")
#: Chromium as root in a container: no sandbox, no GPU, nothing that reaches the network on its own.
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SKIP_VARIABLE: Final = "TOOLKIT_SKIP_BROWSER_TESTS"
ARTIFACTS: Final = Path(__file__).parent.parent / "test-artifacts"
SCREENSHOT: Final = ARTIFACTS / "demo.png"
TOKENS: Final = {"alice-token": "alice", "bob-token": "bob"}
#: Bound on each browser step (milliseconds), and on starting the browser.
STEP_MS: Final = 5_000
LAUNCH_MS: Final = 30_000
SANSIO_DENIAL_NOISE: Final = "ASGI callable returned without completing handshake."


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get(SKIP_VARIABLE) == "1" and not os.environ.get("CI"):
            pytest.skip(f"{CHROMIUM} is missing and {SKIP_VARIABLE}=1")
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=LAUNCH_MS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def switch() -> SwitchableApp:
    return SwitchableApp()


@pytest.fixture(scope="module")
def module_server(switch: SwitchableApp) -> Iterator[LiveServer]:
    with run_server(switch) as server:
        yield server


@pytest.fixture
def server(module_server: LiveServer, switch: SwitchableApp) -> Iterator[LiveServer]:
    switch.app = create_app(TOKENS, local_origins(module_server.port))  # a room of its own for each test
    module_server.logs.take()
    yield module_server
    errors = [r.getMessage().strip() for r in module_server.logs.take(logging.ERROR)]
    unexpected = [e for e in errors if e != SANSIO_DENIAL_NOISE]
    assert not unexpected, f"the server logged errors: {unexpected}"


class Person:
    """One browser context (its own cookies and storage) with the page open; records console errors."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.context = context
        self.page = page
        self.console_errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def open(self, server: LiveServer, token: str) -> None:
        """Open the link the server prints for ``token`` and press Join."""
        self.page.goto(f"{server.http_url}/#token={token}")
        self.page.click("#join")

    def say(self, text: str) -> None:
        self.page.fill("#text", text)
        self.page.press("#text", "Enter")


@pytest.fixture
def people(browser: Browser) -> Iterator[list[Person]]:
    """Call ``people`` entries into being with ``new_person(people, browser)``; all are closed afterwards."""
    made: list[Person] = []
    yield made
    for person in made:
        person.context.close()


def new_person(people: list[Person], browser: Browser) -> Person:
    context = browser.new_context(viewport={"width": 900, "height": 720})
    context.set_default_timeout(STEP_MS)
    person = Person(context, context.new_page())
    people.append(person)
    return person


def test_two_people_chat_and_see_errors_for_invalid_messages(
    browser: Browser, server: LiveServer, people: list[Person]
) -> None:
    alice, bob = new_person(people, browser), new_person(people, browser)
    alice.open(server, "alice-token")
    expect(alice.page.locator("#status")).to_have_text("Connected as alice.")
    assert "#token" not in alice.page.url  # the link's token is wiped from the address bar
    bob.open(server, "bob-token")
    expect(bob.page.locator("#status")).to_have_text("Connected as bob.")
    expect(alice.page.locator("#members li")).to_have_text(["alice (you)", "bob"])
    expect(alice.page.locator("#log .notice").last).to_contain_text("bob joined.")

    alice.say("Hi Bob! <b>not bold</b>")
    bob_said = bob.page.locator("#log li.said")
    expect(bob_said).to_have_count(1)
    expect(bob_said.locator(".who")).to_have_text("alice")
    expect(bob_said.locator(".text")).to_have_text("Hi Bob! <b>not bold</b>")  # text, never markup
    bob.say("Héllo Alice ✓")
    alice_said = alice.page.locator("#log li.said")
    expect(alice_said).to_have_count(2)
    expect(alice_said.last.locator(".text")).to_have_text("Héllo Alice ✓")
    expect(alice.page.locator("#log li.said.mine .text")).to_have_text(["Hi Bob! <b>not bold</b>"])

    error = alice.page.locator("#error")
    alice.say("   ")
    expect(error).to_have_text("Not sent: the message is empty.")
    alice.say("x" * 501)
    expect(error).to_have_text("Not sent: the message is longer than 500 characters.")
    expect(alice.page.locator("#text")).to_have_value("x" * 501)  # given back to edit
    alice.page.fill("#text", "")
    alice.page.click("summary")
    alice.page.fill("#raw", '{"type": "say", "text": ')
    alice.page.click("#send-raw")
    expect(error).to_have_text("Not sent: that is not valid JSON.")
    alice.page.fill("#raw", '{"type": "shout", "text": "hi"}')
    alice.page.click("#send-raw")
    expect(error).to_have_text("Not sent: unknown message type.")

    alice.say("Sorry, that was me testing.")
    expect(error).to_be_hidden()  # a good message clears the last error
    expect(bob_said).to_have_count(3)  # alice's two and his own: none of the invalid ones reached him
    expect(bob_said.last.locator(".text")).to_have_text("Sorry, that was me testing.")

    alice.page.fill("#raw", '{"type": "say", "text": ""}')
    alice.page.click("#send-raw")
    expect(error).to_have_text("Not sent: the message is empty.")
    expect(alice.page.locator("#text")).to_have_value("")  # nothing of the message box to give back
    SCREENSHOT.parent.mkdir(exist_ok=True)
    alice.page.screenshot(path=SCREENSHOT, full_page=True)

    bob.page.click("#leave")
    expect(bob.page.locator("#status")).to_have_text("You left the chat.")
    expect(alice.page.locator("#log .notice").last).to_contain_text("bob left.")
    expect(alice.page.locator("#members li")).to_have_text(["alice (you)"])
    assert alice.console_errors == []
    assert bob.console_errors == []


def test_a_bad_token_is_refused_and_the_page_says_access_denied(
    browser: Browser, server: LiveServer, people: list[Person]
) -> None:
    mallory = new_person(people, browser)
    mallory.open(server, "wrong-token")
    status = mallory.page.locator("#status")
    expect(status).to_contain_text("Access denied")
    expect(status).to_have_class("status denied")
    expect(mallory.page.locator("#chat")).to_be_hidden()
    expect(mallory.page.locator("#join")).to_be_enabled()  # may try another token
    # The page cannot see the status; the server sent 401, and the browser reported a failed handshake.
    assert '"WebSocket /ws" 401' in [r.getMessage().split(" - ", 1)[-1] for r in server.logs.records()]
    assert [e for e in mallory.console_errors if "/ws' failed" in e], mallory.console_errors

    mallory.page.fill("#token", "not a token")  # spaces: no subprotocol can carry it
    mallory.page.click("#join")
    expect(status).to_have_text("Access denied: that is not a valid token.")

    mallory.page.fill("#token", "alice-token")  # the right one still works on the same page
    mallory.page.click("#join")
    expect(status).to_have_text("Connected as alice.")


def screenshot(person: Person, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    person.page.screenshot(path=ARTIFACTS / name, full_page=True)


def test_a_server_stop_is_told_in_words(browser: Browser, people: list[Person]) -> None:
    switch = SwitchableApp()
    with run_server(switch) as own:
        switch.app = create_app(TOKENS, local_origins(own.port))
        alice = new_person(people, browser)
        alice.open(own, "alice-token")
        expect(alice.page.locator("#status")).to_have_text("Connected as alice.")
        own.stop()  # uvicorn closes every connection with 1012 "service restart"
        said = "The server stopped or is restarting. Join again when it is back."
        expect(alice.page.locator("#status")).to_have_text(said)
        expect(alice.page.locator("#status")).to_have_class("status denied")
        expect(alice.page.locator("#log .notice .text").last).to_have_text(said)
        expect(alice.page.locator("#members li")).to_have_count(0)  # nobody listed: not in a room any more
        expect(alice.page.locator("#join")).to_be_enabled()
        screenshot(alice, "demo-server-stopped.png")
        assert "1012" not in alice.page.locator("body").inner_text()  # words, not a bare code
        assert alice.console_errors == []
        assert [r.getMessage() for r in own.logs.records(logging.ERROR)] == []


def test_after_leave_the_room_list_and_the_error_are_reset(
    browser: Browser, server: LiveServer, people: list[Person]
) -> None:
    alice, bob = new_person(people, browser), new_person(people, browser)
    alice.open(server, "alice-token")
    bob.open(server, "bob-token")
    expect(alice.page.locator("#members li")).to_have_text(["alice (you)", "bob"])
    alice.say("   ")
    expect(alice.page.locator("#error")).to_have_text("Not sent: the message is empty.")

    alice.page.click("#leave")
    expect(alice.page.locator("#status")).to_have_text("You left the chat.")
    expect(alice.page.locator("#error")).to_be_hidden()
    expect(alice.page.locator("#members li")).to_have_count(0)
    expect(bob.page.locator("#members li")).to_have_text(["bob (you)"])
    expect(bob.page.locator("#log .notice .text").last).to_have_text("alice left.")
    screenshot(alice, "demo-left.png")

    alice.page.click("#join")  # back in: a fresh list, and the welcome again
    expect(alice.page.locator("#status")).to_have_text("Connected as alice.")
    expect(alice.page.locator("#members li")).to_have_text(["alice (you)", "bob"])
    expect(alice.page.locator("#log .notice .text").last).to_have_text("You joined the room.")
    expect(bob.page.locator("#log .notice .text").last).to_have_text("alice joined.")
    assert alice.console_errors == []


def test_a_rate_limited_user_sees_why_and_what_became_of_their_messages(
    browser: Browser, server: LiveServer, switch: SwitchableApp, people: list[Person]
) -> None:
    switch.app = create_app(TOKENS, local_origins(server.port), burst=3, rate=0.001)  # join and two says
    alice, bob = new_person(people, browser), new_person(people, browser)
    bob.open(server, "bob-token")
    alice.open(server, "alice-token")
    expect(alice.page.locator("#status")).to_have_text("Connected as alice.")
    for text in ("one", "two", "three"):  # the third is one over the burst: closed 1008 "rate limit"
        alice.say(text)

    status = alice.page.locator("#status")
    expect(status).to_contain_text("you sent messages faster than the server allows")
    expect(status).to_have_class("status denied")
    mine = alice.page.locator("#log li.mine")
    expect(mine.locator(".text")).to_have_text(["one", "two", "three"])  # each of her messages stays shown
    refused = mine.filter(has_text="three")
    expect(refused).to_have_class("said mine unconfirmed")  # never reached the room ...
    expect(refused.locator(".state")).to_have_text("not confirmed")  # ... and the page says so
    expect(alice.page.locator("#log .notice").last).to_contain_text("faster than the server allows")
    expect(alice.page.locator("#log")).to_contain_text("may not have reached the room")
    expect(alice.page.locator("#members li")).to_have_count(0)
    expect(bob.page.locator("#log li.said .text")).to_have_text(["one", "two"])  # what the room got
    screenshot(alice, "demo-rate-limited.png")
    assert alice.console_errors == []
