"""Analytics fixtures: request log rows, one at a time or a realistic sample."""

from __future__ import annotations

import random
from datetime import datetime, timedelta


def make_log(**fields):
    """One RequestLog row with sensible defaults (created_at defaults to now)."""
    from django.utils import timezone

    from analytics.models import RequestLog

    defaults = dict(
        created_at=timezone.now(),
        endpoint="chat",
        requested_model="fast",
        provider="groq",
        model="llama-3.3-70b",
        key_label="groq-0",
        status_code=200,
        outcome=RequestLog.Outcome.OK,
        attempts=1,
        trail=[{"route": "groq/llama-3.3-70b/groq-0", "outcome": "ok", "ms": 300}],
        prompt_tokens=10,
        completion_tokens=20,
        latency_ms=300,
    )
    defaults.update(fields)
    return RequestLog.objects.create(**defaults)


# provider → (models, base latency ms, probability that a call fails, its usual failure)
SAMPLE_PROVIDERS = {
    "groq": (["llama-3.3-70b-versatile", "llama-3.1-8b-instant"], 350, 0.12, "rate_limited"),
    "gemini": (["gemini-2.0-flash", "gemini-2.5-flash"], 900, 0.05, "rate_limited"),
    "cerebras": (["llama-3.3-70b"], 250, 0.08, "rate_limited"),
    "openrouter": (["meta-llama/llama-3.3-70b-instruct:free", "deepseek/deepseek-chat:free"], 1800, 0.22, "server_error"),
    "mistral": (["mistral-small-latest"], 700, 0.04, "timeout"),
    "github": (["openai/gpt-4o-mini"], 1200, 0.1, "rate_limited"),
}


def sample_request_logs(*, now: datetime, hours: int = 48, per_hour: int = 40, users=(), seed: int = 7) -> int:
    """Realistic-looking traffic for the dashboard (deterministic for a seed): failovers, exhausted
    requests, client errors, a daily rhythm. Returns how many rows were written."""
    from analytics.models import RequestLog

    rng = random.Random(seed)
    providers = list(SAMPLE_PROVIDERS)
    weights = [5, 4, 3, 2, 2, 1]
    rows = []
    for h in range(hours):
        hour_start = now - timedelta(hours=hours - h)
        # Busier in the (UTC) working day.
        volume = int(per_hour * (0.4 + 0.9 * (8 <= hour_start.hour <= 18)) * rng.uniform(0.7, 1.3))
        for _ in range(volume):
            created = hour_start + timedelta(seconds=rng.uniform(0, 3599))
            endpoint = rng.choices(["chat", "embedding"], [9, 1])[0]
            trail, served = [], None
            for provider in rng.choices(providers, weights, k=3):
                models, base, fail_p, failure = SAMPLE_PROVIDERS[provider]
                model = rng.choice(models)
                key = f"{provider}-{rng.randint(0, 1)}"
                ms = int(base * rng.lognormvariate(0, 0.45))
                if rng.random() < fail_p:
                    trail.append({"route": f"{provider}/{model}/{key}", "outcome": failure, "ms": min(ms, 400)})
                    continue
                trail.append({"route": f"{provider}/{model}/{key}", "outcome": "ok", "ms": ms})
                served = (provider, model, key)
                break
            roll = rng.random()
            if roll < 0.03:
                outcome, status = RequestLog.Outcome.CLIENT_ERROR, 400
            elif served is None:
                outcome, status = RequestLog.Outcome.EXHAUSTED, 429
            elif roll < 0.045:
                outcome, status = RequestLog.Outcome.INCOMPLETE, 200
            elif roll < 0.06:
                outcome, status = RequestLog.Outcome.CANCELLED, 499
            else:
                outcome, status = RequestLog.Outcome.OK, 200
            prompt = rng.randint(40, 2500) if endpoint == "chat" else rng.randint(10, 300)
            completion = rng.randint(20, 900) if endpoint == "chat" and served else 0
            rows.append(
                RequestLog(
                    created_at=created,
                    user=rng.choice(users) if users else None,
                    endpoint=endpoint,
                    requested_model=rng.choice(["fast", "smart", "llama-3.3-70b"]) if endpoint == "chat" else "embed",
                    provider=served[0] if served else "",
                    model=served[1] if served else "",
                    key_label=served[2] if served else "",
                    stream=rng.random() < 0.5,
                    status_code=status,
                    outcome=outcome,
                    attempts=len(trail),
                    trail=trail,
                    prompt_tokens=prompt if served else 0,
                    completion_tokens=completion,
                    latency_ms=sum(step["ms"] for step in trail) + rng.randint(5, 40),
                )
            )
    RequestLog.objects.bulk_create(rows, batch_size=500)
    return len(rows)
