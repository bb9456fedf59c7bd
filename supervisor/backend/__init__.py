"""The reference backend: `POST /api/chat` (and `/api/chat/stream`) on one SessionSupervisor.

Run it with `python -m supervisor serve`, or mount `create_app(BackendSettings(...))` in your
own ASGI server. Its agents (`ResearchPaperAgent`, `MedicalWelfareAgent`) are thin classes over
the supervisor, with the `process()` / `process_stream()` interface; add one by subclassing
`ChatAgent`.
"""

from supervisor.backend._agents import ChatAgent, Intent, MedicalWelfareAgent, ResearchPaperAgent
from supervisor.backend._app import BackendSettings, create_app

__all__ = [
    "BackendSettings",
    "ChatAgent",
    "Intent",
    "MedicalWelfareAgent",
    "ResearchPaperAgent",
    "create_app",
]
