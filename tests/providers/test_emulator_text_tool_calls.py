"""The emulator's directives for what free models get wrong: text tool calls, double-encoded arguments,
inline <think> blocks and empty answers (the gateway's rescue is tested against these)."""

from __future__ import annotations

import json

import openai
import pytest

from tests.emulator import parse_key

WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL = [{"role": "user", "content": "call tool please"}]


def client(emulator, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=emulator.base_url("groq"), api_key=key, max_retries=0)


def streamed_text(stream) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_key_grammar_of_the_new_directives():
    spec = parse_key("k;textcall=kimi:lead;doubleargs;thinktag;empty")
    assert (spec.textcall, spec.textcall_lead, spec.doubleargs, spec.thinktag, spec.empty) == (
        "kimi", True, True, True, True)
    assert parse_key("k;textcall").textcall == "hermes"


@pytest.mark.parametrize(("style", "expected"), [
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "echo"}}\n</tool_call>'),
    ("function", '<function=get_weather>{"city": "echo"}</function>'),
    ("params", "<tool_call>\n<function=get_weather>\n<parameter=city>\necho\n</parameter>\n</function>\n</tool_call>"),
    ("kimi", "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
             '{"city": "echo"}<|tool_call_end|><|tool_calls_section_end|>'),
    ("deepseek", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                 '{"city": "echo"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'),
    ("json", '{"name": "get_weather", "arguments": {"city": "echo"}}'),
    ("args", '{"city": "echo"}'),
])
def test_textcall_writes_the_call_as_text_plain_and_streamed(emulator, style, expected):
    api = client(emulator, f"k;textcall={style}")

    reply = api.chat.completions.create(model="m", messages=CALL, tools=WEATHER)
    streamed = streamed_text(api.chat.completions.create(model="m", messages=CALL, tools=WEATHER, stream=True))

    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content == expected == streamed
    assert reply.choices[0].finish_reason == "stop"


def test_textcall_lead_puts_text_before_the_call(emulator):
    reply = client(emulator, "k;textcall=function:lead").chat.completions.create(model="m", messages=CALL,
                                                                                  tools=WEATHER)
    assert reply.choices[0].message.content.startswith("I will call the tool.\n<function=get_weather>")


def test_doubleargs_encodes_real_arguments_twice(emulator):
    reply = client(emulator, "k;doubleargs").chat.completions.create(model="m", messages=CALL, tools=WEATHER)

    arguments = reply.choices[0].message.tool_calls[0].function.arguments
    assert json.loads(json.loads(arguments)) == {"city": "echo"}


def test_thinktag_opens_the_answer_with_a_think_block(emulator):
    reply = client(emulator, "k;thinktag").chat.completions.create(model="m", messages=[
        {"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "<think>Let me think about this.</think>\n\nEcho: hi"


def test_empty_answers_with_nothing(emulator):
    api = client(emulator, "k;empty")

    reply = api.chat.completions.create(model="m", messages=CALL, tools=WEATHER)
    chunks = list(api.chat.completions.create(model="m", messages=CALL, stream=True))

    assert reply.choices[0].message.content == "" and reply.choices[0].message.tool_calls is None
    assert streamed_text(chunks) == ""
    assert chunks[-1].choices[0].finish_reason == "stop"
