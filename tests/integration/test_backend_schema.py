"""Schemathesis against the backend's own OpenAPI schema, over real HTTP.

Valid and invalid requests are generated for every operation; no answer may be a 5xx other than
the documented 502 (Parlant refused our credentials), 503 (Parlant unreachable, shutting down)
and 504 (reply past its deadline), and
every answer must match the schema (status documented, body shaped as declared).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, positive_data_acceptance

from supervisor.testing import AppServer

DOCUMENTED_5XX = {502, 503, 504}


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_get_documented_answers_and_no_undocumented_5xx(
    backend: Callable[..., AppServer], mode: GenerationMode
) -> None:
    server = backend()
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    statuses: Counter[int] = Counter()

    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=server.url, timeout=60)
            statuses[response.status_code] += 1
            assert response.status_code < 500 or response.status_code in DOCUMENTED_5XX
            excluded = [not_a_server_error]
            if isinstance(case.body, dict) and "messages" in case.body:
                # the AI SDK's body: JSON Schema cannot say "the last message is the user's,
                # with text" (its description does); a 422 for that is the right answer
                excluded.append(positive_data_acceptance)
            case.validate_response(response, excluded_checks=excluded)

        try:
            check()
        except Unsatisfiable:  # e.g. no invalid value exists for a free-form path parameter
            assert mode is GenerationMode.NEGATIVE

    assert statuses[422 if mode is GenerationMode.NEGATIVE else 200] > 0


def test_the_schema_says_a_message_of_whitespace_alone_is_not_valid(
    backend: Callable[..., AppServer],
) -> None:
    server = backend()
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    message = document["components"]["schemas"]["ChatRequest"]["properties"]["message"]

    assert message["pattern"] == r"\S"  # what the backend checks, so generators do not send it
    assert re.search(message["pattern"], "\f") is None
