"""The API layer: one module per inbound surface over one exchange (see docs/architecture.md).

    app.py          the NinjaAPI instance(s) and the routers of every surface, mounted by freellm/urls.py
    dialects.py     which dialect a request speaks, and each dialect's error shape
    exchange.py     what every surface shares: auth, body parsing, the chat exchange (plan, prime, assemble),
                    stream relay, trail headers and the request-log row
    openai_chat.py  embeddings.py  media.py  models.py   the OpenAI-compatible surfaces
    completions.py  legacy text completions (fill in the middle natively where a model has it)
    responses.py    OpenAI Responses (POST/GET/DELETE /v1/responses), over the same chat exchange
    gemini.py  ollama.py      Google's Gemini API (/v1beta) and Ollama's (/api), each on a NinjaAPI of its own;
                              their translators (pure, no I/O) in gemini_wire.py and ollama_wire.py
"""
