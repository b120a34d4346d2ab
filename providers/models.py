"""Providers, their keys and models, and the fallback chains clients address by name."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from .crypto import EncryptedTextField


class ModelKind(models.TextChoices):
    CHAT = "chat"
    EMBEDDING = "embedding"
    IMAGE = "image"
    TRANSCRIPTION = "transcription"
    SPEECH = "speech"


class Provider(models.Model):
    class Adapter(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        GEMINI = "gemini", "Google Gemini (native)"
        COHERE = "cohere", "Cohere v2 (native)"
        CLOUDFLARE = "cloudflare", "Cloudflare Workers AI (native)"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    adapter = models.CharField(max_length=20, choices=Adapter.choices, default=Adapter.OPENAI)
    base_url = models.URLField(max_length=500)
    enabled = models.BooleanField(default=True)
    headers = models.JSONField(default=dict, blank=True, help_text="Extra HTTP headers sent on every call.")
    drop_params = models.JSONField(
        default=list, blank=True, help_text="Request parameters this provider rejects; removed before sending."
    )
    keyless = models.BooleanField(default=False, help_text="Works without an API key.")
    # Provider-wide caps shared by all keys and models (e.g. OpenRouter's 1,000 requests/day).
    account_rpm = models.PositiveIntegerField(null=True, blank=True)
    account_rpd = models.PositiveIntegerField(null=True, blank=True)
    daily_reset_tz = models.CharField(
        max_length=64, default="UTC", help_text="IANA time zone whose midnight resets the daily quotas."
    )
    # What the provider catalog last wrote (fields, plus the model ids it created): catalog_sync only
    # changes a field still equal to it, so edits made in the admin on purpose survive a sync.
    catalog_values = models.JSONField(default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ProviderKey(models.Model):
    class Status(models.TextChoices):
        UNKNOWN = "unknown"
        ACTIVE = "active"
        INVALID = "invalid", "Invalid (auth failed)"

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="keys")
    label = models.CharField(max_length=100)
    secret = EncryptedTextField(blank=True)
    enabled = models.BooleanField(default=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNKNOWN)
    status_detail = models.CharField(max_length=300, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider__slug", "label"]
        constraints = [models.UniqueConstraint(fields=["provider", "label"], name="uniq_key_label_per_provider")]

    def __str__(self) -> str:
        return f"{self.provider.slug}/{self.label}"

    @property
    def masked_secret(self) -> str:
        return mask_secret(self.secret)


def mask_secret(secret: str) -> str:
    if not secret:
        return "(none)"
    return "…" + secret[-4:] if len(secret) > 8 else "…"


class UpstreamModel(models.Model):
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="models")
    model_id = models.CharField(max_length=200, help_text="The provider's own model id.")
    kind = models.CharField(max_length=16, choices=ModelKind.choices, default=ModelKind.CHAT)
    family = models.CharField(
        max_length=100, blank=True, help_text="Model identity; embedding vectors are only comparable within one."
    )
    dimensions = models.PositiveIntegerField(null=True, blank=True, help_text="Embedding size (embeddings).")
    context_window = models.PositiveIntegerField(null=True, blank=True)
    supports_tools = models.BooleanField(default=False)
    supports_vision = models.BooleanField(default=False)
    supports_json = models.BooleanField(default=False)
    supports_fim = models.BooleanField(
        default=False, verbose_name="supports fill-in-the-middle",
        help_text="The provider serves this model on /fim/completions (Mistral's codestral): legacy completions "
                  "(POST /v1/completions) go there natively instead of as a chat prompt.",
    )
    # One id for the same model across providers (Groq's llama-3.3-70b-versatile, NVIDIA's
    # meta/llama-3.3-70b-instruct, ... are all llama-3.3-70b-instruct): requesting it routes among all of them.
    canonical = models.CharField(max_length=200, blank=True, db_index=True,
                                 help_text="Cross-provider id of this model, e.g. llama-3.3-70b-instruct.")
    # Per-key limits; empty means not documented.
    rpm = models.PositiveIntegerField(null=True, blank=True)
    rpd = models.PositiveIntegerField(null=True, blank=True)
    tpm = models.PositiveIntegerField(null=True, blank=True)
    tpd = models.PositiveIntegerField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    # What the provider catalog last wrote for this model (see Provider.catalog_values).
    catalog_values = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ["provider__slug", "model_id"]
        constraints = [models.UniqueConstraint(fields=["provider", "model_id"], name="uniq_model_per_provider")]
        indexes = [models.Index(fields=["model_id"]), models.Index(fields=["kind", "family"])]

    def __str__(self) -> str:
        return self.route_name

    @property
    def route_name(self) -> str:
        return f"{self.provider.slug}/{self.model_id}"


class ChainStrategy(models.TextChoices):
    """How a chain orders its members (routing/strategies.py says how each is scored)."""

    PRIORITY = "priority", "priority: the chain's order"
    FASTEST = "fastest", "fastest: quickest expected answer"
    RELIABLE = "reliable", "reliable: highest success rate"
    BALANCED = "balanced", "balanced: reliability, speed and chain order"
    HEADROOM = "headroom", "headroom: most quota left"


class FallbackChain(models.Model):
    name = models.CharField(max_length=100, unique=True, help_text="What clients send as `model`.")
    kind = models.CharField(max_length=16, choices=ModelKind.choices, default=ModelKind.CHAT)
    strategy = models.CharField(max_length=16, choices=ChainStrategy.choices, default=ChainStrategy.PRIORITY,
                                help_text="How members are ordered; quota, health and capabilities still filter.")
    description = models.CharField(max_length=300, blank=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ChainEntry(models.Model):
    chain = models.ForeignKey(FallbackChain, on_delete=models.CASCADE, related_name="entries")
    model = models.ForeignKey(UpstreamModel, on_delete=models.CASCADE, related_name="chain_entries")
    position = models.PositiveIntegerField(default=0, db_index=True)

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["chain", "model"], name="uniq_model_per_chain")]
        verbose_name_plural = "chain entries"

    def __str__(self) -> str:
        return f"{self.chain.name}#{self.position}: {self.model}"


class ModelAlias(models.Model):
    """A name pattern clients send that the config does not know (``claude-*``, ``gpt-5-codex``), served by a
    chain or one provider/model. Aliases are tried in ``position`` order, the first match wins, and an exact
    chain or model name always beats them (routing.router.resolve)."""

    pattern = models.CharField(
        max_length=200, unique=True,
        help_text="fnmatch pattern, case-sensitive: * any run of characters, ? one character, [abc] one of them.",
    )
    target = models.CharField(max_length=300, help_text="A chain name or a provider/model route.")
    position = models.PositiveIntegerField(default=0, db_index=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "id"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return f"{self.pattern} → {self.target}"

    def clean(self) -> None:
        if self.target and not alias_target_stored(self.target):
            raise ValidationError({"target": f"'{self.target}' is neither a chain nor a provider/model route."})


def alias_target_stored(target: str) -> bool:
    """Whether an alias target names a stored chain or provider/model (enabled or not)."""
    if FallbackChain.objects.filter(name=target).exists():
        return True
    slug, sep, model_id = target.partition("/")
    return bool(sep) and UpstreamModel.objects.filter(provider__slug=slug, model_id=model_id).exists()
