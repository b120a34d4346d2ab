"""The snippets that are programs run as printed (with a real key) against the live gateway and answer."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess

import pytest

from routing.clients import client_config
from tests.fixtures_gateway import add_chain, add_provider


@pytest.fixture
def served(gateway, emulator):
    add_provider(emulator, "groq", ["g-a"], ["llama-3.3-70b"])
    add_chain("auto", ["groq/llama-3.3-70b"])
    return gateway


def only_block(agent: str, gateway) -> str:
    (block,) = client_config(agent=agent, base_url=gateway.url, key=gateway.api_key).blocks
    return block.text


def test_the_openai_sdk_snippet_answers(served):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(only_block("openai-sdk", served), "<openai-sdk snippet>", "exec"), {})
    assert printed.getvalue() == "Echo: Say hello\n"


def test_the_anthropic_sdk_snippet_answers(served):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(only_block("anthropic-sdk", served), "<anthropic-sdk snippet>", "exec"), {})
    assert printed.getvalue() == "Echo: Say hello\n"


def test_the_curl_snippet_answers(served):
    done = subprocess.run(["bash", "-c", only_block("curl", served).rstrip() + " --silent --show-error --fail"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["choices"][0]["message"]["content"] == "Echo: Say hello"
