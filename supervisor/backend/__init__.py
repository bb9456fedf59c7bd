"""The reference backend: `POST /api/chat` (and `/api/chat/stream`) on one SessionSupervisor.

Run it with `python -m supervisor serve`, or mount `create_app(BackendSettings(...))` in your
own ASGI server. Its agents (`ResearchPaperAgent`, `MedicalWelfareAgent`) are thin classes over
the supervisor, with the `process()` / `process_stream()` interface; add one by subclassing
`ChatAgent`.
"""

from supervisor._extras import require_extra

require_extra(
    "backend",
    "fastapi",
    "uvicorn",
    "sse_starlette",
    "sqlalchemy",
    "aiosqlite",
    "limits",
    what="The reference backend (supervisor.backend)",
)

from supervisor.backend._agents import ChatAgent, Intent, MedicalWelfareAgent, ResearchPaperAgent
from supervisor.backend._app import BackendSettings, create_app
from supervisor.backend._http import HttpLimits, TokenRedaction, harden_server
from supervisor.backend._serve import serve
from supervisor.backend._store import StoreUnusable

__all__ = [
    "BackendSettings",
    "ChatAgent",
    "HttpLimits",
    "Intent",
    "MedicalWelfareAgent",
    "ResearchPaperAgent",
    "StoreUnusable",
    "TokenRedaction",
    "create_app",
    "harden_server",
    "serve",
]
