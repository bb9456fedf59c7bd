"""Parlant's own command line (`parlant-server`, `parlant.bin.server.main`), with one change:
its `openai` model is the deterministic offline one `ParlantServer` uses, so that the command
runs without a key or a network (the OpenAI service downloads its tokenizer at start).
Everything else (options, `--module`, the stores, Chroma) is Parlant's own.

    python tests/realserver/parlant_cli.py run --port 8800 --module supervisor.parlant_module
"""

from __future__ import annotations

import sys

import parlant.bin.server as server

from supervisor.testing._parlant_nlp import service_factory
from supervisor.testing._parlant_server import echo_reply

if __name__ == "__main__":
    server.NLP_SERVICE_INITIALIZERS["openai"] = service_factory(echo_reply)
    sys.argv[0] = "parlant-server"
    server.main()
