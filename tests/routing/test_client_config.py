"""`manage.py client_config AGENT`: every snippet parses as its format and holds what the tool reads."""

from __future__ import annotations

import ast
import io
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from routing.clients import AGENTS

BASE = "https://llm.example.com"
OPENAI = f"{BASE}/v1"
HEADER = re.compile(r"^==> (?P<where>.+) \[(?P<language>\w+)\]$")


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("client_config", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def blocks_of(output: str) -> list[tuple[str, str, str]]:
    """The command's output cut at its `==> where [language]` lines: (where, language, text)."""
    blocks: list[list] = []
    for line in output.splitlines(keepends=True):
        match = HEADER.match(line.rstrip("\n"))
        if match:
            blocks.append([match["where"], match["language"], ""])
        elif blocks:
            blocks[-1][2] += line
    assert blocks, f"no blocks in:\n{output}"
    # A blank line separates one block from the next header.
    return [(where, language, text.rstrip("\n") + "\n") for where, language, text in blocks]


def parse(language: str, text: str):
    """Parse a block with the real parser of its format; shell blocks are checked by bash itself."""
    if language == "toml":
        return tomllib.loads(text)
    if language == "json":
        return json.loads(text)
    if language == "yaml":
        return yaml.safe_load(text)
    if language == "python":
        return ast.parse(text)
    if language == "shell":
        checked = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
        assert checked.returncode == 0, checked.stderr
        return _exports(text)
    raise AssertionError(f"unknown language {language!r}")


def _exports(text: str) -> dict[str, str]:
    """NAME -> value of each `export NAME=value` line, unquoted the way the shell does it."""
    values = {}
    for line in text.splitlines():
        if line.startswith("export "):
            (assignment,) = shlex.split(line[len("export "):])
            name, _, value = assignment.partition("=")
            values[name] = value
    return values


def parsed(agent: str, *args: str) -> list[tuple[str, object, str]]:
    out, _ = run(agent, "--base-url", BASE, *args)
    return [(language, parse(language, text), text) for _, language, text in blocks_of(out)]


def of(blocks, language: str, index: int = 0):
    return [value for lang, value, _ in blocks if lang == language][index]


def python_calls(tree: ast.Module) -> dict[str, dict[str, object]]:
    """Keyword arguments of each call in the snippet whose values are literals, by the called name."""
    calls = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            calls[name] = {
                kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if isinstance(kw.value, ast.Constant)
            }
    return calls


# What each tool reads, per agent: the names must be the ones the tool's documentation gives.
def check_claude_code(blocks, key, model):
    env = of(blocks, "shell")
    assert env["ANTHROPIC_BASE_URL"] == BASE  # the root: Claude Code appends /v1/messages
    assert env["ANTHROPIC_AUTH_TOKEN"] == key
    for name in ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL",
                 "ANTHROPIC_DEFAULT_OPUS_MODEL", "ANTHROPIC_SMALL_FAST_MODEL"):  # fmt: skip
        assert env[name] == model
    assert of(blocks, "json")["env"] == env


def check_codex(blocks, key, model):
    config = of(blocks, "toml")
    assert config["model"] == model and config["model_provider"] == "freellm"
    provider = config["model_providers"]["freellm"]
    assert provider["base_url"] == OPENAI and provider["wire_api"] == "responses"
    assert of(blocks, "shell")[provider["env_key"]] == key


def check_gemini_cli(blocks, key, model):
    assert of(blocks, "shell") == {"GOOGLE_GEMINI_BASE_URL": BASE, "GEMINI_API_KEY": key, "GEMINI_MODEL": model}


def check_aider(blocks, key, model):
    shell = next(text for lang, _, text in blocks if lang == "shell")
    assert of(blocks, "shell") == {"OPENAI_API_BASE": OPENAI, "OPENAI_API_KEY": key}
    assert shlex.split(shell.splitlines()[-1]) == ["aider", "--model", f"openai/{model}"]
    assert of(blocks, "yaml") == {"openai-api-base": OPENAI, "model": f"openai/{model}"}


def check_continue(blocks, key, model):
    config = of(blocks, "yaml")
    assert {"name", "version", "schema"} <= config.keys() and config["schema"] == "v1"
    (entry,) = config["models"]
    assert entry["provider"] == "openai" and entry["apiBase"] == OPENAI
    assert entry["apiKey"] == key and entry["model"] == model and "chat" in entry["roles"]


def check_cline(blocks, key, model):
    assert of(blocks, "yaml") == {"API Provider": "OpenAI Compatible", "Base URL": OPENAI, "API Key": key,
                                  "Model ID": model}  # fmt: skip


def check_opencode(blocks, key, model):
    config = of(blocks, "json")
    provider = config["provider"]["freellm"]
    assert provider["npm"] == "@ai-sdk/openai-compatible" and provider["options"]["baseURL"] == OPENAI
    assert model in provider["models"] and config["model"] == f"freellm/{model}"
    env_name = re.fullmatch(r"\{env:(\w+)\}", provider["options"]["apiKey"])[1]
    assert of(blocks, "shell")[env_name] == key


def check_zed(blocks, key, model):
    config = of(blocks, "json")
    assert config["language_models"]["ollama"]["api_url"] == BASE  # the root: Zed appends /api/...
    assert config["agent"]["default_model"] == {"provider": "ollama", "model": f"{model}:latest"}
    assert of(blocks, "shell") == {"OLLAMA_API_KEY": key}


def check_open_webui(blocks, key, model):
    assert of(blocks, "shell", 0) == {"OPENAI_API_BASE_URL": OPENAI, "OPENAI_API_KEY": key}
    assert of(blocks, "shell", 1) == {"OLLAMA_BASE_URL": BASE}


def check_openai_sdk(blocks, key, model):
    calls = python_calls(of(blocks, "python"))
    assert calls["OpenAI"] == {"base_url": OPENAI, "api_key": key}
    assert calls["client.chat.completions.create"]["model"] == model


def check_anthropic_sdk(blocks, key, model):
    calls = python_calls(of(blocks, "python"))
    assert calls["anthropic.Anthropic"] == {"base_url": BASE, "api_key": key}
    assert calls["client.messages.create"]["model"] == model


def check_langchain(blocks, key, model):
    calls = python_calls(of(blocks, "python"))
    assert calls["ChatOpenAI"] == {"base_url": OPENAI, "api_key": key, "model": model}


def check_curl(blocks, key, model):
    (text,) = [text for lang, _, text in blocks if lang == "shell"]
    argv = shlex.split(text.replace("\\\n", " "))
    assert argv[:2] == ["curl", f"{OPENAI}/chat/completions"]
    assert f"Authorization: Bearer {key}" in argv
    assert json.loads(argv[argv.index("-d") + 1])["model"] == model


CHECKS = {name.removeprefix("check_").replace("_", "-"): fn for name, fn in globals().items() if name.startswith("check_")}


def test_every_agent_has_its_check():
    assert set(CHECKS) == set(AGENTS)


@pytest.mark.parametrize("agent", list(AGENTS))
def test_snippet_parses_and_holds_a_placeholder_without_key(agent):
    blocks = parsed(agent)
    CHECKS[agent](blocks, "fl-...", "auto")
    out, _ = run(agent, "--base-url", BASE)
    assert "note: Replace fl-... with the full key" in out


@pytest.mark.parametrize("agent", list(AGENTS))
def test_snippet_with_a_real_key_and_an_awkward_model_still_parses(agent, django_user_model):
    """The key and model go in verbatim in every format, however they would have to be quoted."""
    from routing.services import api_key_create

    _, raw = api_key_create(user=django_user_model.objects.create_user("alice"), name="laptop")
    model = "groq/it's\"quoted\"\\x$HOME`id`"
    blocks = parsed(agent, "--key", raw, "--model", model)
    CHECKS[agent](blocks, raw, model)
    out, err = run(agent, "--base-url", BASE, "--key", raw)
    assert "Replace" not in out and err == ""


def test_a_known_key_prefix_stands_for_its_key(django_user_model):
    from routing.services import api_key_create

    api_key, raw = api_key_create(user=django_user_model.objects.create_user("alice"), name="laptop")
    out, _ = run("codex", "--key", api_key.prefix)
    assert raw not in out
    assert of([(lang, parse(lang, text), text) for _, lang, text in blocks_of(out)], "shell") == {
        "FREELLM_API_KEY": f"{api_key.prefix}..."
    }
    assert f"note: Replace {api_key.prefix}... with the full key" in out


@pytest.mark.django_db
def test_a_key_this_server_does_not_know_is_printed_with_a_warning():
    out, err = run("gemini-cli", "--key", "fl-not-a-key-of-this-server")
    assert "GEMINI_API_KEY=fl-not-a-key-of-this-server" in out
    assert "not an active key of this server" in err


def test_base_url_defaults_to_the_public_url_setting(settings):
    settings.FREELLM_PUBLIC_URL = "https://team.example.org/llm"
    out, _ = run("openai-sdk")
    assert '"https://team.example.org/llm/v1"' in out


def test_a_pasted_openai_base_url_is_taken_as_the_root():
    out, _ = run("claude-code", "--base-url", "https://llm.example.com/v1/")
    env = _exports(blocks_of(out)[0][2])
    assert env["ANTHROPIC_BASE_URL"] == "https://llm.example.com"


@pytest.mark.parametrize("bad", [["--base-url", "llm.example.com"], ["--base-url", "ftp://x"], ["--key", "sk-123"],
                                 ["--model", "two words"], ["--model", "bell\x07"]])  # fmt: skip
def test_bad_arguments_exit_2_with_the_reason(bad):
    with pytest.raises(CommandError) as caught:
        run("codex", *bad)
    assert caught.value.returncode == 2


def test_unknown_agent_exits_2_listing_the_known_ones():
    with pytest.raises(CommandError) as caught:
        run("vim")
    assert caught.value.returncode == 2
    assert all(agent in str(caught.value) for agent in AGENTS)

    # The real exit status, as a shell sees it.
    manage = Path(__file__).resolve().parents[2] / "manage.py"
    done = subprocess.run([sys.executable, str(manage), "client_config", "vim"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "unknown agent 'vim'; known agents: claude-code, codex," in done.stderr


def test_it_writes_nothing_into_the_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for agent in AGENTS:
        run(agent)
    assert list(tmp_path.iterdir()) == []
