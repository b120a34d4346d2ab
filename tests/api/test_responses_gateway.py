"""POST/GET/DELETE /v1/responses through the live gateway with the official openai SDK (responses.create,
.stream, .parse, .retrieve, .delete) over the emulator: function-call round trips, previous_response_id,
text.format, stored responses scoped per user, failover and stickiness, and Codex-shaped traffic replayed
from a fixture."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from pydantic import BaseModel

from analytics.models import RequestLog
from tests.fixtures_gateway import add_chain, add_provider, wait_until_idle
from tests.polling import wait_until

CAPABLE = {"supports_tools": True, "supports_json": True}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}
CODEX_FIXTURE = Path(__file__).parent / "fixtures" / "codex_responses_session.json"


@pytest.fixture
def chain(gateway, emulator):
    add_provider(emulator, "groq", ["g"], [{"model_id": "llama", **CAPABLE}])
    add_provider(emulator, "cerebras", ["c"], [{"model_id": "qwen", **CAPABLE}])
    add_chain("coding", ["groq/llama", "cerebras/qwen"])


def upstream_messages(emulator) -> list[dict]:
    return emulator.calls[-1].body["messages"]


def test_create_then_continue_a_function_call_with_previous_response_id(gateway, emulator, chain):
    client = gateway.openai()
    first = client.responses.create(model="coding", input="call tool for Oslo", tools=[WEATHER],
                                    instructions="You report the weather.")
    assert first.status == "completed" and first.id.startswith("resp_")
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "echo"}
    assert emulator.calls[-1].body["tools"][0]["function"]["name"] == "get_weather"

    second = client.responses.create(model="coding", previous_response_id=first.id, tools=[WEATHER],
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "sunny"}])
    assert second.output_text == "Tool said: sunny"
    assert second.previous_response_id == first.id and second.instructions is None
    # The earlier turn went upstream before this one; the earlier instructions did not (as OpenAI does).
    assert upstream_messages(emulator) == [
        {"role": "user", "content": "call tool for Oslo"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.call_id, "type": "function", "function": {"name": "get_weather", "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"},
    ]
    assert second.usage.input_tokens > 0 and second.usage.total_tokens > second.usage.input_tokens


def test_streamed_function_call_round_trip(gateway, emulator, chain):
    client = gateway.openai()
    with client.responses.stream(model="coding", input="call tool for Oslo", tools=[WEATHER]) as stream:
        events = list(stream)
        first = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    assert kinds.index("response.function_call_arguments.done") < kinds.index("response.output_item.done")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.parsed_arguments == {"city": "echo"}  # the SDK parsed the strict tool's arguments
    assert emulator.calls[-1].stream

    # A streamed answer is stored too, before its last event goes out: continue from it at once.
    events = list(client.responses.create(model="coding", previous_response_id=first.id, tools=[WEATHER],
                                          stream=True, input=[{"type": "function_call_output",
                                                               "call_id": call.call_id, "output": "rain"}]))
    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert events[-1].response.output_text == "Tool said: rain"
    assert client.responses.retrieve(events[-1].response.id).output_text == "Tool said: rain"


def test_previous_response_id_sends_every_earlier_turn(gateway, emulator, chain):
    client = gateway.openai()
    one = client.responses.create(model="coding", input="one", instructions="first rules")
    two = client.responses.create(model="coding", input="two", previous_response_id=one.id)
    three = client.responses.create(model="coding", input=[{"role": "user", "content": "three"}],
                                    previous_response_id=two.id, instructions="new rules")
    assert three.output_text == "Echo: three"
    assert [(m["role"], m["content"]) for m in upstream_messages(emulator)] == [
        ("system", "new rules"), ("user", "one"), ("assistant", "Echo: one"), ("user", "two"),
        ("assistant", "Echo: two"), ("user", "three")]


def test_retrieve_and_delete_a_stored_response(gateway, emulator, chain):
    client = gateway.openai()
    created = client.responses.create(model="coding", input="keep me")
    got = client.responses.retrieve(created.id)
    assert got.model_dump() == created.model_dump()

    deleted = client.responses.with_raw_response.delete(created.id)
    assert deleted.status_code == 200
    assert json.loads(deleted.content) == {"id": created.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)


def test_store_false_is_not_kept(gateway, emulator, chain):
    client = gateway.openai()
    created = client.responses.create(model="coding", input="forget me", store=False)
    assert created.output_text == "Echo: forget me"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_unknown_ids_are_404_in_openai_shape(gateway, emulator, chain):
    client = gateway.openai()
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve("resp_missing")
    assert caught.value.body == {"message": "Response with id 'resp_missing' not found.",
                                 "type": "invalid_request_error", "param": None, "code": None}
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="coding", input="x", previous_response_id="resp_missing")
    assert caught.value.body["param"] == "previous_response_id"
    assert emulator.calls == []


def test_another_users_response_is_unknown(gateway, emulator, chain, django_user_model):
    from routing.services import api_key_create

    created = gateway.openai().responses.create(model="coding", input="mine")
    _, bob_key = api_key_create(user=django_user_model.objects.create_user("bob", password="x"), name="bob")
    bob = openai.OpenAI(base_url=gateway.base_url, api_key=bob_key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(model="coding", input="steal", previous_response_id=created.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(created.id)
    assert gateway.openai().responses.retrieve(created.id).output_text == "Echo: mine"


class Echo(BaseModel):
    echo: str


def test_text_format_json_schema_parses(gateway, emulator, chain):
    parsed = gateway.openai().responses.parse(model="coding", input="structured please", text_format=Echo)
    assert parsed.output_parsed == Echo(echo="structured please")
    sent = emulator.calls[-1].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Echo"
    assert sent["json_schema"]["schema"]["properties"] == {"echo": {"title": "Echo", "type": "string"}}


def test_bad_input_is_a_400_in_openai_shape(gateway, emulator, chain):
    client = gateway.openai()
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="coding", input=5)
    assert caught.value.body["type"] == "invalid_request_error" and caught.value.body["param"] == "input"
    assert caught.value.body["message"] == "input must be a string or a list of input items"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="coding", input=["not an item"])
    assert caught.value.body["param"] == "input.0" and "must be an object" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="coding", input=[{"type": "input_file", "file_id": "file_1"}])
    assert "'input_file'" in caught.value.message
    assert emulator.calls == []


@pytest.mark.parametrize("tool", ["web_search", "file_search", "computer_use_preview"])
def test_builtin_tools_are_a_400_naming_the_type(gateway, emulator, chain, tool):
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.openai().responses.create(model="coding", input="x", tools=[{"type": tool}])
    assert f"'{tool}'" in caught.value.message and caught.value.body["param"] == "tools.0.type"
    assert emulator.calls == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_rate_limited_upstream_fails_over(gateway, emulator, chain, stream):
    from providers.models import ProviderKey

    ProviderKey.objects.filter(provider__slug="groq").update(secret="g;429")  # noqa: S106
    client = gateway.openai()
    if stream:
        with client.responses.with_streaming_response.create(model="coding", input="hello", stream=True) as raw:
            provider = raw.headers["X-FreeLLM-Provider"]
            events = [json.loads(line.removeprefix("data: ")) for line in raw.iter_lines()
                      if line.startswith("data: ")]
        text = events[-1]["response"]["output"][0]["content"][0]["text"]
    else:
        raw = client.responses.with_raw_response.create(model="coding", input="hello")
        provider, text = raw.headers["X-FreeLLM-Provider"], raw.parse().output_text
    assert (provider, text) == ("cerebras", "Echo: hello")
    assert [call.provider for call in emulator.calls] == ["groq", "cerebras"]
    wait_until_idle()
    [row] = RequestLog.objects.all()
    assert (row.dialect, row.provider, row.attempts, row.stream) == ("responses", "cerebras", 2, stream)


def test_a_conversation_stays_on_its_model(gateway, emulator, chain):
    from providers.models import ChainEntry

    client = gateway.openai()
    first = client.responses.with_raw_response.create(model="coding", input="Plan a weekend in Lisbon.")
    assert first.headers["X-FreeLLM-Provider"] == "groq"
    for position, slug in enumerate(["cerebras", "groq"]):  # cerebras now first for new conversations
        entry = ChainEntry.objects.get(chain__name="coding", model__provider__slug=slug)
        entry.position = position
        entry.save()
    second = client.responses.with_raw_response.create(model="coding", input="And where to eat?",
                                                       previous_response_id=first.parse().id)
    assert second.headers["X-FreeLLM-Provider"] == "groq" and "X-FreeLLM-Switched" not in second.headers
    other = client.responses.with_raw_response.create(model="coding", input="Something else entirely.")
    assert other.headers["X-FreeLLM-Provider"] == "cerebras"


def test_a_stream_that_breaks_after_the_first_byte_ends_with_response_failed(gateway, emulator, chain):
    from providers.models import ProviderKey

    ProviderKey.objects.filter(provider__slug="groq").update(secret="g;midfail=3")  # noqa: S106
    events = list(gateway.openai().responses.create(model="coding", input="one two three four", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed" and events[-1].response.error.message
    assert "response.output_text.delta" in [event.type for event in events]
    assert [call.provider for call in emulator.calls] == ["groq"]  # after the first byte: no failover


def test_codex_shaped_session_replays(gateway, emulator, chain):
    """Codex (wire_api = "responses"): store false, stream true, the whole history re-sent every turn."""
    turns = json.loads(CODEX_FIXTURE.read_text())["turns"]
    client = gateway.openai()
    body = turns[0]
    events = list(client.responses.create(**body))
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    done = [event.item for event in events if event.type == "response.output_item.done"]
    [call] = [item for item in done if item.type == "function_call"]
    assert call.name == "shell" and "command" in json.loads(call.arguments)
    sent = emulator.calls[-1].body
    assert sent["reasoning_effort"] == "medium" and sent["parallel_tool_calls"] is False
    assert sent["messages"][0] == {"role": "system", "content": body["instructions"]}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(events[-1].response.id)  # store: false

    # Turn 2: what Codex sends back (the items it received, then the tool's output), no previous_response_id.
    appended = json.loads(json.dumps(turns[1]["append_input"]).replace("CALL_ID", call.call_id))
    second = {**body, "input": [*body["input"], *[item.model_dump(exclude_none=True) for item in done],
                                *appended]}
    events = list(client.responses.create(**second))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text.startswith("Tool said: {\"output\":\"README.md")
    messages = emulator.calls[-1].body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "user", "assistant", "tool"]
    assert messages[3]["tool_calls"][0]["id"] == call.call_id and messages[4]["tool_call_id"] == call.call_id


def test_stored_in_redis_with_a_ttl(gateway, emulator, chain, settings, redis_url):
    import redis

    from routing.models import StoredResponse
    from routing.stored_responses import REDIS_KEY_PREFIX

    settings.REDIS_URL = redis_url
    client = gateway.openai()
    created = client.responses.create(model="coding", input="in redis")
    ttl = redis.Redis.from_url(redis_url).ttl(REDIS_KEY_PREFIX + created.id)
    assert 0 < ttl <= settings.FREELLM_RESPONSES_TTL
    assert not StoredResponse.objects.exists()
    follow = client.responses.create(model="coding", input="again", previous_response_id=created.id)
    assert follow.output_text == "Echo: again"
    client.responses.delete(created.id)
    assert redis.Redis.from_url(redis_url).exists(REDIS_KEY_PREFIX + created.id) == 0


def test_without_redis_rows_are_stored_and_pruned_once_expired(gateway, emulator, chain, settings):
    from datetime import timedelta

    from django.utils import timezone

    from routing.models import StoredResponse
    from routing.tasks import stored_responses_prune

    settings.REDIS_URL = ""  # the embedded default (CI runs the suite with Redis)
    created = gateway.openai().responses.create(model="coding", input="in the database")
    row = StoredResponse.objects.get(id=created.id)
    assert row.user.username == "alice" and row.response["output"][0]["content"][0]["text"] == "Echo: in the database"
    assert stored_responses_prune() == 0
    StoredResponse.objects.filter(id=created.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(openai.NotFoundError):
        gateway.openai().responses.retrieve(created.id)  # expired reads as gone even before the prune
    assert stored_responses_prune() == 1 and not StoredResponse.objects.exists()


def test_redis_down_stores_in_the_database(gateway, emulator, chain, settings):
    from routing.models import StoredResponse

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: connection refused
    client = gateway.openai()
    created = client.responses.create(model="coding", input="during an outage")
    assert StoredResponse.objects.filter(id=created.id).exists()
    follow = client.responses.create(model="coding", input="still here", previous_response_id=created.id)
    assert [m["content"] for m in upstream_messages(emulator)] == ["during an outage", "Echo: during an outage",
                                                                   "still here"]
    client.responses.delete(follow.id)
    assert not StoredResponse.objects.filter(id=follow.id).exists()


def test_continuing_past_a_deleted_turn_is_a_404_naming_it(gateway, emulator, chain):
    client = gateway.openai()
    one = client.responses.create(model="coding", input="one")
    two = client.responses.create(model="coding", input="two", previous_response_id=one.id)
    client.responses.delete(one.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="coding", input="three", previous_response_id=two.id)
    assert one.id in caught.value.message and caught.value.body["param"] == "previous_response_id"


def test_custom_tool_round_trip_streamed(gateway, emulator, chain):
    """Codex's free-form apply_patch for gpt-5 models: a custom tool with a grammar."""
    patch_tool = {"type": "custom", "name": "apply_patch", "description": "Apply a patch to files",
                  "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}}
    client = gateway.openai()
    events = list(client.responses.create(model="coding", input="call tool to fix the typo", tools=[patch_tool],
                                          stream=True, store=False))
    [call] = [e.item for e in events if e.type == "response.output_item.done"]
    assert (call.type, call.name, call.input) == ("custom_tool_call", "apply_patch", "echo")
    assert "response.custom_tool_call_input.done" in [e.type for e in events]
    sent = emulator.calls[-1].body["tools"][0]["function"]
    assert sent["parameters"]["properties"]["input"]["type"] == "string" and "hunk+" in sent["description"]

    answer = client.responses.create(model="coding", tools=[patch_tool], store=False, input=[
        {"role": "user", "content": "call tool to fix the typo"}, call.model_dump(exclude_none=True),
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Success. Updated README.md"}])
    assert answer.output_text == "Tool said: Success. Updated README.md"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_reasoning_comes_back_as_a_reasoning_item(gateway, emulator, chain, stream):
    from providers.models import ProviderKey

    ProviderKey.objects.filter(provider__slug="groq").update(secret="g;think=2")  # noqa: S106
    client = gateway.openai()
    if stream:
        with client.responses.stream(model="coding", input="think first") as events:
            kinds = [event.type for event in events]
            response = events.get_final_response()
        assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    else:
        response = client.responses.create(model="coding", input="think first")
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text
    assert response.output_text == "Echo: think first"


def test_leaving_mid_stream_cancels_the_upstream_and_stores_nothing(gateway, emulator, chain):
    from providers.models import ProviderKey
    from routing.models import StoredResponse

    ProviderKey.objects.filter(provider__slug="groq").update(secret="g;gap=0.2")  # noqa: S106
    with gateway.openai().responses.stream(model="coding", input="one two three four five six") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                break  # leaving: the with-block closes the connection
    assert wait_until(lambda: emulator.calls[0].disconnected, timeout=10) and not emulator.calls[0].completed
    wait_until_idle()
    [row] = RequestLog.objects.all()
    assert (row.outcome, row.dialect) == ("cancelled", "responses")
    assert not StoredResponse.objects.exists()
