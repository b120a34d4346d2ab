"""Ready-made client configurations: how each agent, editor or SDK is pointed at freellm.

One place for every snippet, used by ``manage.py client_config`` and the admin's *Connect a client* page.
Pure functions (no database): the caller picks the key (the full key only when the user typed it; a
placeholder naming the key's visible prefix otherwise, since the full key is never stored) and the model.

Which door each tool knocks on (all at the same server):
- OpenAI wire at ``<root>/v1`` (chat completions, responses): codex, aider, continue, cline, opencode,
  open-webui, openai-sdk, langchain, curl;
- Anthropic Messages at the root (the client appends ``/v1/messages``): claude-code, anthropic-sdk;
- Gemini native at the root (the client appends ``/v1beta/models/...``): gemini-cli;
- Ollama at the root (the client appends ``/api/...``): zed, open-webui's Ollama mode.

The variable and key names below are the ones each tool reads (checked against its own documentation);
renaming one here breaks users' setups silently, so treat them as part of the public contract.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

import yaml

from .models import API_KEY_PREFIX

DEFAULT_MODEL = "auto"
# Where the snippets ask for the key when no full key was given.
KEY_ENV = "FREELLM_API_KEY"


class Language(StrEnum):
    """The format of a block: what it must parse as (tests check each with a real parser)."""

    SHELL = "shell"
    TOML = "toml"
    JSON = "json"
    YAML = "yaml"
    PYTHON = "python"


@dataclass(frozen=True)
class Block:
    where: str  # the file it goes in, or where to paste/run it
    language: Language
    text: str


@dataclass(frozen=True)
class ClientConfig:
    agent: str
    title: str
    blocks: list[Block]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """What a snippet points at: the server root, the key (or its placeholder) and the model."""

    root: str  # http(s)://host[:port][/prefix], no trailing slash
    key: str
    model: str
    key_is_placeholder: bool

    @property
    def openai_base(self) -> str:
        return f"{self.root}/v1"


def key_placeholder(prefix: str | None = None) -> str:
    """What stands for a key whose full value is not known: its visible prefix, visibly cut short."""
    return f"{prefix}..." if prefix else f"{API_KEY_PREFIX}..."


def normalize_base_url(url: str) -> str:
    """The server root from what a user typed: ``https://llm.example.com/v1/`` → ``https://llm.example.com``.

    Anthropic, Gemini and Ollama clients append their own paths to the root, so a trailing ``/v1`` (the
    OpenAI base people copy from elsewhere) is dropped; the OpenAI snippets add it back.
    """
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r} (expected e.g. http://127.0.0.1:8000)")
    if parts.query or parts.fragment:
        raise ValueError(f"the base URL takes no query or fragment: {url!r}")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


# --- snippet builders ----------------------------------------------------------------------------------


def _sh(value: str) -> str:
    return shlex.quote(value)


def _exports(pairs: list[tuple[str, str]]) -> str:
    return "\n".join(f"export {name}={_sh(value)}" for name, value in pairs) + "\n"


def _py(value: str) -> str:
    # A JSON string is a valid Python string literal (same escapes, double quotes).
    return json.dumps(value)


def _toml(value: str) -> str:
    # ...and a valid TOML basic string: TOML's escapes (\" \\ \n \uXXXX ...) are a superset of what
    # json.dumps emits, and it never emits a raw control character.
    return json.dumps(value)


def _json(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def _yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _key_export(t: Target) -> Block:
    return Block("your shell (~/.bashrc, ~/.zshrc)", Language.SHELL, _exports([(KEY_ENV, t.key)]))


def _claude_code(t: Target) -> ClientConfig:
    env = [
        ("ANTHROPIC_BASE_URL", t.root),
        ("ANTHROPIC_AUTH_TOKEN", t.key),
        ("ANTHROPIC_MODEL", t.model),
        # Claude Code 2.x picks its "opus" / "sonnet" / "haiku" tiers from these...
        ("ANTHROPIC_DEFAULT_OPUS_MODEL", t.model),
        ("ANTHROPIC_DEFAULT_SONNET_MODEL", t.model),
        ("ANTHROPIC_DEFAULT_HAIKU_MODEL", t.model),
        # ...1.x its background model from this one.
        ("ANTHROPIC_SMALL_FAST_MODEL", t.model),
    ]
    return ClientConfig(
        "claude-code",
        "Claude Code",
        [
            Block("your shell, before running `claude`", Language.SHELL, _exports(env)),
            Block("or ~/.claude/settings.json (the same values, for every shell)", Language.JSON, _json({"env": dict(env)})),
        ],
        [
            "ANTHROPIC_BASE_URL is the server root: Claude Code appends /v1/messages itself.",
            "Unset ANTHROPIC_API_KEY (and run /logout if you signed in to claude.ai): it wins over "
            "ANTHROPIC_AUTH_TOKEN. /status shows which base URL and token are in use.",
        ],
    )


def _codex(t: Target) -> ClientConfig:
    toml = (
        f"model = {_toml(t.model)}\n"
        'model_provider = "freellm"\n'
        "\n"
        "[model_providers.freellm]\n"
        'name = "freellm"\n'
        f"base_url = {_toml(t.openai_base)}\n"
        f"env_key = {_toml(KEY_ENV)}\n"
        'wire_api = "responses"\n'
    )
    return ClientConfig(
        "codex",
        "OpenAI Codex CLI",
        [Block("~/.codex/config.toml", Language.TOML, toml), _key_export(t)],
        [
            "Codex calls <base_url>/responses and reads the key from the variable named by env_key.",
            "In an existing config.toml keep the top-level keys (model, model_provider) above the first [table].",
        ],
    )


def _gemini_cli(t: Target) -> ClientConfig:
    env = [("GOOGLE_GEMINI_BASE_URL", t.root), ("GEMINI_API_KEY", t.key), ("GEMINI_MODEL", t.model)]
    return ClientConfig(
        "gemini-cli",
        "Gemini CLI",
        [Block("your shell, or ~/.gemini/.env without `export`", Language.SHELL, _exports(env))],
        [
            "GOOGLE_GEMINI_BASE_URL is the server root: the CLI appends /v1beta/models/... itself.",
            "Gemini CLI accepts plain http only for localhost; serve freellm over https for other machines.",
        ],
    )


def _aider(t: Target) -> ClientConfig:
    conf = {"openai-api-base": t.openai_base, "model": f"openai/{t.model}"}
    return ClientConfig(
        "aider",
        "Aider",
        [
            Block(
                "your shell",
                Language.SHELL,
                _exports([("OPENAI_API_BASE", t.openai_base), ("OPENAI_API_KEY", t.key)])
                + f"aider --model {_sh('openai/' + t.model)}\n",
            ),
            Block("or .aider.conf.yml (home or repo root; the key stays in OPENAI_API_KEY)", Language.YAML, _yaml(conf)),
        ],
        ["The openai/ prefix tells aider to use its OpenAI-compatible client; the rest is the freellm model."],
    )


def _continue(t: Target) -> ClientConfig:
    conf = {
        "name": "freellm",
        "version": "0.0.1",
        "schema": "v1",
        "models": [
            {
                "name": f"freellm {t.model}",
                "provider": "openai",
                "model": t.model,
                "apiBase": t.openai_base,
                "apiKey": t.key,
                "roles": ["chat", "edit", "apply"],
            }
        ],
    }
    return ClientConfig(
        "continue",
        "Continue (VS Code, JetBrains)",
        [Block("~/.continue/config.yaml", Language.YAML, _yaml(conf))],
        ["Merge the model into the models list of an existing config.yaml; Continue reloads it on save."],
    )


def _cline(t: Target) -> ClientConfig:
    fields = {"API Provider": "OpenAI Compatible", "Base URL": t.openai_base, "API Key": t.key, "Model ID": t.model}
    return ClientConfig(
        "cline",
        "Cline",
        [Block("Cline → Settings (⚙) → API Configuration: one field each", Language.YAML, _yaml(fields))],
        ["Cline keeps these in the editor's secret storage, not in a file: enter them in its settings panel."],
    )


# opencode substitutes {env:NAME} in its config with that environment variable.
OPENCODE_KEY_REF = "{env:" + KEY_ENV + "}"


def _opencode(t: Target) -> ClientConfig:
    conf = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "freellm": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "freellm",
                "options": {"baseURL": t.openai_base, "apiKey": OPENCODE_KEY_REF},
                "models": {t.model: {"name": f"{t.model} (freellm)"}},
            }
        },
        "model": f"freellm/{t.model}",
    }
    return ClientConfig(
        "opencode",
        "opencode",
        [Block("opencode.json (project root) or ~/.config/opencode/opencode.json", Language.JSON, _json(conf)), _key_export(t)],
        [f"opencode reads the key from the environment ({OPENCODE_KEY_REF}), so the file holds no secret."],
    )


def _ollama_model(model: str) -> str:
    # Ollama clients name models "name:tag"; freellm lists its chains and models with the tag "latest".
    return model if ":" in model else f"{model}:latest"


def _zed(t: Target) -> ClientConfig:
    conf = {
        "language_models": {"ollama": {"api_url": t.root}},
        "agent": {"default_model": {"provider": "ollama", "model": _ollama_model(t.model)}},
    }
    return ClientConfig(
        "zed",
        "Zed (through its Ollama provider)",
        [
            Block("Zed settings.json (zed: open settings)", Language.JSON, _json(conf)),
            Block("your shell, before starting Zed from it", Language.SHELL, _exports([("OLLAMA_API_KEY", t.key)])),
        ],
        [
            "api_url is the server root: Zed appends /api/tags, /api/chat, ... and lists freellm's chains "
            "and models as Ollama models.",
            "Or paste the key into Agent settings → Ollama → API key. Without a key freellm answers 401 unless "
            "the server sets FREELLM_OLLAMA_KEYLESS_USER and Zed runs on the server's own machine.",
        ],
    )


def _open_webui(t: Target) -> ClientConfig:
    return ClientConfig(
        "open-webui",
        "Open WebUI",
        [
            Block(
                "Open WebUI's environment (shell, .env, or docker run -e NAME=value)",
                Language.SHELL,
                _exports([("OPENAI_API_BASE_URL", t.openai_base), ("OPENAI_API_KEY", t.key)]),
            ),
            Block(
                "or its Ollama mode instead (keyless: see the note)",
                Language.SHELL,
                _exports([("OLLAMA_BASE_URL", t.root)]),
            ),
        ],
        [
            "Inside Docker, 127.0.0.1 is the container itself: use host.docker.internal or the host's address.",
            "Ollama mode sends no key: freellm accepts it only from loopback with FREELLM_OLLAMA_KEYLESS_USER set.",
        ],
    )


def _openai_sdk(t: Target) -> ClientConfig:
    code = (
        "from openai import OpenAI\n"
        "\n"
        f"client = OpenAI(base_url={_py(t.openai_base)}, api_key={_py(t.key)})\n"
        "reply = client.chat.completions.create(\n"
        f"    model={_py(t.model)},\n"
        '    messages=[{"role": "user", "content": "Say hello"}],\n'
        ")\n"
        "print(reply.choices[0].message.content)\n"
    )
    return ClientConfig("openai-sdk", "OpenAI Python SDK", [Block("python (pip install openai)", Language.PYTHON, code)])


def _anthropic_sdk(t: Target) -> ClientConfig:
    code = (
        "import anthropic\n"
        "\n"
        f"client = anthropic.Anthropic(base_url={_py(t.root)}, api_key={_py(t.key)})\n"
        "message = client.messages.create(\n"
        f"    model={_py(t.model)},\n"
        "    max_tokens=1024,\n"
        '    messages=[{"role": "user", "content": "Say hello"}],\n'
        ")\n"
        "print(message.content[0].text)\n"
    )
    return ClientConfig(
        "anthropic-sdk",
        "Anthropic Python SDK",
        [Block("python (pip install anthropic)", Language.PYTHON, code)],
        ["base_url is the server root: the SDK appends /v1/messages itself."],
    )


def _langchain(t: Target) -> ClientConfig:
    code = (
        "from langchain_openai import ChatOpenAI\n"
        "\n"
        f"llm = ChatOpenAI(base_url={_py(t.openai_base)}, api_key={_py(t.key)}, model={_py(t.model)})\n"
        'print(llm.invoke("Say hello").content)\n'
    )
    return ClientConfig("langchain", "LangChain", [Block("python (pip install langchain-openai)", Language.PYTHON, code)])


def _curl(t: Target) -> ClientConfig:
    body = json.dumps({"model": t.model, "messages": [{"role": "user", "content": "Say hello"}]})
    text = (
        f"curl {_sh(t.openai_base + '/chat/completions')} \\\n"
        f"  -H {_sh('Authorization: Bearer ' + t.key)} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {_sh(body)}\n"
    )
    return ClientConfig(
        "curl",
        "curl",
        [Block("your shell", Language.SHELL, text)],
        ["Add -i to see the X-FreeLLM-* headers: who answered and every route that was tried."],
    )


# In the order the admin page lists them.
AGENTS = {
    "claude-code": _claude_code,
    "codex": _codex,
    "gemini-cli": _gemini_cli,
    "aider": _aider,
    "continue": _continue,
    "cline": _cline,
    "opencode": _opencode,
    "zed": _zed,
    "open-webui": _open_webui,
    "openai-sdk": _openai_sdk,
    "anthropic-sdk": _anthropic_sdk,
    "langchain": _langchain,
    "curl": _curl,
}

# For pickers: each builder names its tool (built once on a sample target, so the title stays in one place).
AGENT_TITLES = {
    agent: build(Target(root="http://127.0.0.1", key=key_placeholder(), model=DEFAULT_MODEL, key_is_placeholder=True)).title
    for agent, build in AGENTS.items()
}


class UnknownAgent(ValueError):
    def __init__(self, agent: str) -> None:
        super().__init__(f"unknown agent {agent!r}; known agents: {', '.join(AGENTS)}")
        self.agent = agent


def client_config(*, agent: str, base_url: str, key: str | None = None, key_prefix: str | None = None,
                  model: str = DEFAULT_MODEL) -> ClientConfig:
    """The configuration of ``agent`` pointed at ``base_url``.

    ``key`` is a full key the user supplied; without it the snippets hold a placeholder naming
    ``key_prefix`` (the key's visible prefix) so the user knows which key to paste there.
    """
    build = AGENTS.get(agent)
    if build is None:
        raise UnknownAgent(agent)
    model = (model or DEFAULT_MODEL).strip()
    # Printable and without spaces: a model name never needs more, and every format then quotes it plainly.
    if not model or not model.isprintable() or any(c.isspace() for c in model):
        raise ValueError(f"not a model name: {model!r}")
    if key is not None and not key.startswith(API_KEY_PREFIX):
        raise ValueError(f"a freellm key starts with {API_KEY_PREFIX!r}")
    target = Target(
        root=normalize_base_url(base_url),
        key=key or key_placeholder(key_prefix),
        model=model,
        key_is_placeholder=key is None,
    )
    config = build(target)
    if target.key_is_placeholder:
        config.notes.insert(
            0,
            f"Replace {target.key} with the full key: it was shown once, when the key was created "
            "(only its hash is stored). Lost it? Create a new key.",
        )
    return config


def render_text(config: ClientConfig) -> str:
    """The configuration as the command prints it: the title and notes, then each block under a
    ``==> where [language]`` line (so a script can cut the output into its blocks)."""
    parts = [f"# {config.title}\n", *(f"note: {note}\n" for note in config.notes)]
    parts.extend(f"\n==> {block.where} [{block.language}]\n{block.text}" for block in config.blocks)
    return "".join(parts)
