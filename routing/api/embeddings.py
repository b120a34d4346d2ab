"""POST /v1/embeddings: routed inside the requested model's embedding family."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from . import exchange
from .dialects import Dialect

router = Router(tags=["embeddings"])


class EmbeddingRequest(exchange.OpenSchema):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(None, ge=1)
    encoding_format: str | None = Field(None, pattern="^(float|base64)$")

    @field_validator("input")
    @classmethod
    def _something_to_embed(cls, value):
        if not value or (isinstance(value, list) and not all(value)):
            raise PydanticCustomError("empty_input", "input must not be empty, nor hold an empty item")
        return value


@router.post("/embeddings", summary="Create embeddings")
async def embeddings(request: HttpRequest, payload: EmbeddingRequest):
    answer, ctx, served = await exchange.embeddings(request, payload.to_upstream(), dialect=Dialect.OPENAI)
    return exchange.with_trail(exchange.json_response(answer), ctx, served)
