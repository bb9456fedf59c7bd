"""A deterministic Parlant `NLPService`: a real Parlant server that answers without a model.

Parlant's engine asks its NLP service for instances of pydantic schemas (guideline matches,
tool calls, the message-generation schema, preambles ...). This service returns a valid
instance of whatever schema it is asked for: the reply where a reply is asked for (derived
from the customer's latest message by a `ReplyFunction`), else the schema's defaults and
empty values, which the engine reads as "nothing matched, no tool to call". It embeds by
hashing and moderates nothing. No network, no model weights, the same answer every time.

It also streams (for agents with `output_mode=STREAM`): the same reply, one word a chunk, a
chunk every `chunk_delay` seconds. And it fails on purpose: every generation whose prompt's
latest customer message contains `FAIL_MARKER` raises, as a model provider that is down does;
with `CUT_MARKER`, only a streamed reply fails, after its first chunk, as a stream the provider
cuts does.

This module imports `parlant` (the `[parlant-server]` extra); the rest of the library never
does. The server runs it in its own process (`supervisor.testing._parlant_main`).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import pydantic
from lagom import Container
from parlant.core.common import DefaultBaseModel
from parlant.core.engines.alpha.canned_response_generator import (
    CannedResponseDraftSchema,
    CannedResponsePreambleSchema,
)
from parlant.core.engines.alpha.message_generator import MessageSchema
from parlant.core.engines.alpha.prompt_builder import BuiltInSection, PromptBuilder
from parlant.core.nlp.embedding import Embedder, EmbeddingResult
from parlant.core.nlp.generation import (
    SchematicGenerationResult,
    SchematicGenerator,
    StreamingTextGenerationResult,
    StreamingTextGenerator,
)
from parlant.core.nlp.generation_info import GenerationInfo, UsageInfo
from parlant.core.nlp.moderation import ModerationService, NoModeration
from parlant.core.nlp.service import (
    EmbedderHints,
    NLPService,
    SchematicGeneratorHints,
    StreamingTextGeneratorHints,
)
from parlant.core.nlp.tokenization import EstimatingTokenizer, ZeroEstimatingTokenizer

from supervisor.emulator import CUT_MARKER, FAIL_MARKER
from supervisor.testing._parlant_server import ReplyFunction, Utterance

__all__ = ["DeterministicNLPService", "service_factory"]

T = TypeVar("T", bound=DefaultBaseModel)


PREAMBLE: Final = "One moment."
"""The preamble the stock perceived-performance policy sends (as the real models often do)."""

_DIMENSIONS: Final = 64


class ModelFailure(RuntimeError):
    """Raised by the deterministic model for a message that carries the failure marker."""


class DeterministicNLPService(NLPService):
    """Answers every generation request of Parlant's engine without a model.

    Args:
        reply: Derives each agent message from the customer's latest message.
        chunk_delay: Seconds between two chunks of a streamed reply.
    """

    def __init__(self, reply: ReplyFunction, *, chunk_delay: float = 0.02) -> None:
        self._reply = reply
        self._chunk_delay = chunk_delay
        self.schemas_asked: dict[str, int] = {}
        """How often each schema was asked for (name -> count): what a turn exercised."""

    @property
    def supports_streaming(self) -> bool:
        return True

    async def get_schematic_generator(
        self, t: type[T], hints: SchematicGeneratorHints | None = None
    ) -> SchematicGenerator[T]:
        # Parlant's container keys generators by their parametrised class (`schema` reads
        # `__orig_class__`), so the instance must come from `_Generator[t]`, not `_Generator`.
        generator: SchematicGenerator[T] = _Generator[t](self)  # type: ignore[valid-type]
        return generator

    async def get_streaming_text_generator(
        self, hints: StreamingTextGeneratorHints | None = None
    ) -> StreamingTextGenerator:
        return _StreamingGenerator(self)

    async def get_embedder(self, hints: EmbedderHints | None = None) -> Embedder:
        return _HashEmbedder()

    async def get_moderation_service(self) -> ModerationService:
        return NoModeration()

    def check(self, utterance: Utterance, *marker: str) -> None:
        """Raise `ModelFailure` if the customer's message carries `FAIL_MARKER` (or `marker`)."""
        if any(m in utterance.message for m in (FAIL_MARKER, *marker)):
            raise ModelFailure("the deterministic model fails on purpose (failure marker)")

    async def chunks(self, prompt: str | PromptBuilder) -> AsyncIterator[str | None]:
        """The reply to `prompt` one word a chunk (spaces lead), then None, as Parlant's
        streaming generators yield it."""
        utterance = _utterance(prompt)
        pieces = re.findall(r"\s*\S+", self._reply(utterance)) or [""]
        self.check(utterance)
        for index, piece in enumerate(pieces):
            if index:
                await asyncio.sleep(self._chunk_delay)
                self.check(utterance, CUT_MARKER)  # a provider that fails mid-stream
            yield piece
        await asyncio.sleep(self._chunk_delay)
        yield None

    def content_for(self, schema: type[T], prompt: str | PromptBuilder) -> T:
        """The instance of `schema` answering `prompt`."""
        self.schemas_asked[schema.__name__] = self.schemas_asked.get(schema.__name__, 0) + 1
        self.check(_utterance(prompt))
        data = _placeholder(schema)
        if issubclass(schema, MessageSchema):
            utterance = _utterance(prompt)
            data.update(
                last_message_of_customer=utterance.message,
                produced_reply=True,
                revisions=[
                    {
                        "revision_number": 1,
                        "content": self._reply(utterance),
                        # Anything else makes the engine ask again, up to its retry limit.
                        "followed_all_instructions": True,
                        "is_repeat_message": False,
                        "all_facts_and_services_sourced_from_prompt": True,
                        "further_revisions_required": False,
                    }
                ],
            )
        elif issubclass(schema, CannedResponseDraftSchema):
            utterance = _utterance(prompt)
            data.update(
                last_message_of_user=utterance.message, response_body=self._reply(utterance)
            )
        elif issubclass(schema, CannedResponsePreambleSchema):
            data.update(preamble=PREAMBLE)
        return schema.model_validate(data)


class _NoModel:
    """What Parlant asks of a model's generator and embedder: no context limit to speak of,
    no tokens to count."""

    @property
    def max_tokens(self) -> int:
        return 1_000_000

    @property
    def tokenizer(self) -> EstimatingTokenizer:
        return ZeroEstimatingTokenizer()


class _Generator(_NoModel, SchematicGenerator[T]):
    def __init__(self, service: DeterministicNLPService) -> None:
        self._service = service

    async def generate(
        self, prompt: str | PromptBuilder, hints: Mapping[str, Any] | None = None
    ) -> SchematicGenerationResult[T]:
        content = self._service.content_for(self.schema, prompt)
        info = GenerationInfo(
            schema_name=self.schema.__name__,
            model=self.id,
            duration=0.0,
            usage=UsageInfo(input_tokens=0, output_tokens=0),
        )
        return SchematicGenerationResult(content=content, info=info)

    @property
    def id(self) -> str:
        return "deterministic"


class _StreamingGenerator(_NoModel, StreamingTextGenerator):
    def __init__(self, service: DeterministicNLPService) -> None:
        self._service = service

    def generate(
        self, prompt: str | PromptBuilder, hints: Mapping[str, Any] | None = None
    ) -> StreamingTextGenerationResult:
        info = GenerationInfo(
            schema_name="streaming",
            model=self.id,
            duration=0.0,
            usage=UsageInfo(input_tokens=0, output_tokens=0),
        )
        return StreamingTextGenerationResult(self._service.chunks(prompt), lambda: info)

    @property
    def id(self) -> str:
        return "deterministic-streaming"


class _HashEmbedder(_NoModel, Embedder):
    """Unit vectors from SHA-256: equal texts embed equally, different ones (almost surely)
    differently. Enough for Parlant's stores; meaningless as semantics."""

    async def embed(
        self, texts: list[str], hints: Mapping[str, Any] | None = None
    ) -> EmbeddingResult:
        return EmbeddingResult(vectors=[_hash_vector(text) for text in texts])

    @property
    def id(self) -> str:
        return "sha256"

    @property
    def dimensions(self) -> int:
        return _DIMENSIONS


def _hash_vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest() * (_DIMENSIONS // 32)
    raw = [byte - 127.5 for byte in digest[:_DIMENSIONS]]
    norm = math.sqrt(sum(value * value for value in raw))
    return [value / norm for value in raw]


def _utterance(prompt: str | PromptBuilder) -> Utterance:
    """The agent's name and the customer's latest message, read from the prompt's sections
    (the same structured events Parlant renders into the prompt text)."""
    if not isinstance(prompt, PromptBuilder):
        return Utterance(agent="", message="")
    identity = prompt.sections.get(BuiltInSection.AGENT_IDENTITY)
    agent = str(identity.props.get("agent_name", "")) if identity is not None else ""
    history = prompt.sections.get(BuiltInSection.INTERACTION_HISTORY)
    events: Sequence[str] = history.props.get("interaction_events", []) if history else []
    for rendered in reversed(events):
        event = json.loads(rendered)
        if event.get("event_kind") == "message" and event.get("event_source") == "user":
            return Utterance(agent=agent, message=str(event["data"]["message"]))
    return Utterance(agent=agent, message="")


def _placeholder(schema: type[pydantic.BaseModel]) -> dict[str, Any]:
    """Field values that validate against `schema`: defaults where it has them, else empty."""
    return {
        name: _empty(field.annotation)
        for name, field in schema.model_fields.items()
        if field.is_required()
    }


def _empty(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in arguments:
            return None
        return _empty(arguments[0])
    if origin is typing.Literal:
        return arguments[0]
    if origin in (list, set, tuple, Sequence) or annotation in (list, set, tuple):
        return []
    if origin is dict or annotation is dict:
        return {}
    if isinstance(annotation, type):
        if issubclass(annotation, pydantic.BaseModel):
            return _placeholder(annotation)
        if issubclass(annotation, enum.Enum):
            return next(iter(annotation)).value
        if issubclass(annotation, bool):
            return False
        if issubclass(annotation, int | float):
            return 0
        if issubclass(annotation, str):
            return ""
    return None


def service_factory(
    reply: ReplyFunction, *, chunk_delay: float = 0.02
) -> Callable[[Container], NLPService]:
    """What `parlant.sdk.Server(nlp_service=...)` takes: a factory of the service."""

    def factory(container: Container) -> NLPService:
        return DeterministicNLPService(reply, chunk_delay=chunk_delay)

    return factory
