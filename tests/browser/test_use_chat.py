"""The README's `useChat` block as it stands (the backend's URL aside), in a React page on
another origin, driven in Chromium: the AI SDK's own hook holds a conversation with the
backend and, after a reload mid-turn, resumes it (`resume: true`, the chat id kept)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from supervisor.testing import AppServer, EmulatorServer
from tests.browser.test_chat_page import agents

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "tests" / "aisdk"
README_URL = "http://localhost:8000"

APP = """\
{imports}
import {{ useState }} from "react";
import {{ createRoot }} from "react-dom/client";

const chatId = localStorage.getItem("chat-id") ?? crypto.randomUUID().replaceAll("-", "");
localStorage.setItem("chat-id", chatId);

function App() {{
{body}
  const [text, setText] = useState("");
  return (
    <main>
      <ol aria-label="Messages">
        {{messages.map((m) => (
          <li key={{m.id}} className={{m.role}}>
            {{m.parts.filter((p) => p.type === "text").map((p) => p.text).join(" | ")}}
          </li>
        ))}}
      </ol>
      <p role="status">{{status}}</p>
      <form onSubmit={{(e) => {{ e.preventDefault(); sendMessage({{ text }}); setText(""); }}}}>
        <label>Message <input value={{text}} onChange={{(e) => setText(e.target.value)}} /></label>
        <button type="submit">Send</button>
      </form>
    </main>
  );
}}

createRoot(document.getElementById("root")!).render(<App />);
"""
PAGE = '<!doctype html><title>useChat</title><div id="root"></div><script src="/app.js"></script>'


def readme_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### With the Vercel AI SDK", 1)[1]
    found = re.search(r"```tsx\n(.*?)```", section, re.DOTALL)
    assert found is not None, "the README's useChat block is gone"
    return found.group(1)


def bundle(block: str, backend_url: str, tmp: Path) -> str:
    """The page's script: the README's block inside a component, bundled by esbuild."""
    lines = block.replace(README_URL, backend_url).splitlines()
    imports = "\n".join(line for line in lines if line.startswith("import "))
    body = "\n".join("  " + line for line in lines if not line.startswith("import "))
    build = PACKAGE / "build"  # inside the package: its node_modules resolve the imports
    build.mkdir(exist_ok=True)
    entry = build / f"{tmp.name}.tsx"
    entry.write_text(APP.format(imports=imports, body=body))
    out = tmp / "app.js"
    esbuild = PACKAGE / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():  # skipped without it, but not under CI, which must run it
        missing = f"needs Node.js 20+ and `npm ci` in {PACKAGE} (.ci/test does both)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    subprocess.run(
        [esbuild, entry, "--bundle", "--format=iife", "--jsx=automatic", f"--outfile={out}",
         "--define:process.env.NODE_ENV=\"production\"", "--log-level=warning"],
        check=True,
        cwd=PACKAGE,
    )  # fmt: skip
    entry.unlink()
    return out.read_text()


def test_the_readmes_use_chat_converses_and_resumes_after_a_reload(
    page: Any,
    serve: Callable[..., EmulatorServer],
    backend: Callable[..., AppServer],
    tmp_path: Path,
) -> None:
    emulator = serve(*agents())
    script: dict[str, str] = {}
    caller = Starlette(
        routes=[
            Route("/", lambda request: HTMLResponse(PAGE)),
            Route("/app.js", lambda request: Response(script["js"], media_type="text/javascript")),
        ]
    )
    with AppServer(caller) as elsewhere:
        app = backend(parlant_url=emulator.url, cors_origins=(elsewhere.url,))
        script["js"] = bundle(readme_block(), app.url, tmp_path)
        page.goto(f"{elsewhere.url}/")
        messages = page.get_by_label("Messages").locator("li.assistant")

        for text in ("Tell me about CKD stage 3", "And stage 4?"):
            page.get_by_role("textbox", name="Message").fill(text)
            page.get_by_role("button", name="Send").click()
            expect(messages.last).to_have_text(f"Let me check. | echo: {text}")
        expect(messages).to_have_count(2)

        page.get_by_role("textbox", name="Message").fill("Wait for it")
        page.get_by_role("button", name="Send").click()
        expect(messages.last).to_have_text("Let me check.")
        page.reload()  # the hook is gone, the chat id is kept: `resume` asks for the turn
        expect(messages).to_have_text(["Let me check."])
        emulator.call(emulator.emulator.release, "answer")

        expect(messages).to_have_text(["Let me check. | echo: Wait for it"])
        expect(page.get_by_role("status")).to_have_text("ready")
    assert len(emulator.call(emulator.emulator.session_ids)) == 1  # one conversation
