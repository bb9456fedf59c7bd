"""The chat page (`GET /`) in a real browser (Chromium): a person types a question, presses
Enter and watches the answer stream in; the conversation goes on, survives a reload mid-turn
with nothing twice; and a page on another origin may call the API only where CORS allows it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from supervisor.testing import AppServer, EmulatedAgent, EmulatorServer, TurnContext

Serve = Callable[..., EmulatorServer]
Backend = Callable[..., AppServer]


async def research(turn: TurnContext) -> None:
    turn.say("Let me check.", preamble=True)
    if turn.message == "Wait for it":
        await turn.gate("answer")
    await turn.reply(f"echo: {turn.message}")


def agents() -> tuple[EmulatedAgent, ...]:
    return tuple(
        EmulatedAgent(name, research, output_mode="stream", chunk_delay=0.005)
        for name in ("ResearchPaperAgent", "MedicalWelfareAgent")
    )


def opened(page: Any, serve: Serve, backend: Backend) -> EmulatorServer:
    """The chat page of a backend on the emulator's agents, open in `page`; the emulator."""
    emulator = serve(*agents())
    page.goto(backend(parlant_url=emulator.url).url)
    return emulator


def ask(page: Any, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_label("Message").press("Enter")


def test_a_person_asks_sees_the_answer_stream_in_and_goes_on(
    page: Any, serve: Serve, backend: Backend
) -> None:
    emulator = opened(page, serve, backend)
    page.get_by_label("Agent").select_option("research_paper")

    ask(page, "Tell me about CKD stage 3")
    log = page.get_by_role("log", name="Conversation")
    expect(log.locator("li.agent:not(.preamble)")).to_have_text(["echo: Tell me about CKD stage 3"])
    expect(log.locator("li.preamble")).to_have_text(["Let me check."])
    expect(page.get_by_label("Agent")).to_be_disabled()  # the conversation is with this agent
    ask(page, "And stage 4?")

    expect(log.locator("li.agent:not(.preamble)")).to_have_text(
        ["echo: Tell me about CKD stage 3", "echo: And stage 4?"]
    )
    expect(log.locator("li.customer")).to_have_text(["Tell me about CKD stage 3", "And stage 4?"])
    assert len(emulator.call(emulator.emulator.session_ids)) == 1  # one conversation


def test_a_reload_mid_turn_resumes_it_with_nothing_twice(
    page: Any, serve: Serve, backend: Backend
) -> None:
    emulator = opened(page, serve, backend)
    ask(page, "Wait for it")
    log = page.get_by_role("log", name="Conversation")
    expect(log.locator("li.preamble")).to_have_text(["Let me check."])

    page.reload()
    expect(log.locator("li.preamble")).to_have_text(["Let me check."])  # kept by the page
    emulator.call(emulator.emulator.release, "answer")

    expect(log.locator("li.agent:not(.preamble)")).to_have_text(["echo: Wait for it"])
    expect(log.locator("li.preamble")).to_have_count(1)
    expect(page.get_by_role("button", name="Send")).to_be_enabled()


CALLER = """<!doctype html><title>another origin</title><script>
async function chat(base) {
  try {
    const response = await fetch(base + "/api/chat", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({message: "hello from elsewhere", intent: "research_paper"}),
    });
    return (await response.json()).reply;
  } catch (error) {
    return "blocked: " + error.name;
  }
}
</script>"""


def test_a_page_on_another_origin_may_call_the_api_only_where_cors_allows_it(
    page: Any, serve: Serve, backend: Backend
) -> None:
    """The other origin is a server of its own on this machine, as a Vite or Next.js dev
    server is (Chromium lets only a local page reach a loopback address at all)."""
    emulator = serve(*agents())
    caller = Starlette(routes=[Route("/", lambda request: HTMLResponse(CALLER))])
    with AppServer(caller) as elsewhere:
        allowing = backend(parlant_url=emulator.url, cors_origins=(elsewhere.url,))
        refusing = backend(parlant_url=emulator.url)
        page.goto(f"{elsewhere.url}/")

        assert page.evaluate("(base) => chat(base)", allowing.url) == "echo: hello from elsewhere"
        assert page.evaluate("(base) => chat(base)", refusing.url) == "blocked: TypeError"


def test_a_reload_after_a_message_that_never_left_shows_the_earlier_turn_once(
    page: Any, serve: Serve, backend: Backend
) -> None:
    """Reloaded before any frame of the new turn came, the page read the conversation's
    latest stream, the earlier turn, and showed it again, doubled."""
    opened(page, serve, backend)
    ask(page, "First")
    log = page.get_by_role("log", name="Conversation")
    expect(log.locator("li.agent:not(.preamble)")).to_have_text(["echo: First"])
    held: list[Any] = []
    page.route("**/api/chat/stream", lambda route: held.append(route))  # it hangs, never sent
    ask(page, "Second")
    expect(log.locator("li.customer")).to_have_text(["First", "Second"])
    assert len(held) == 1

    page.reload()  # the held request is dropped with the page: the backend never saw it

    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(log.locator("li.agent")).to_have_text(["Let me check.", "echo: First"])


def test_a_new_conversation_started_mid_turn_is_not_written_by_the_old_turn(
    page: Any, serve: Serve, backend: Backend
) -> None:
    emulator = opened(page, serve, backend)
    ask(page, "Wait for it")
    log = page.get_by_role("log", name="Conversation")
    expect(log.locator("li.preamble")).to_have_text(["Let me check."])

    page.get_by_role("button", name="New conversation").click()
    emulator.call(emulator.emulator.release, "answer")
    ask(page, "Hello")

    expect(log.locator("li.agent:not(.preamble)")).to_have_text(["echo: Hello"])
    expect(log.locator("li.customer")).to_have_text(["Hello"])
    assert len(emulator.call(emulator.emulator.session_ids)) == 2
