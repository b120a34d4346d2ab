"""The `fim` model capability: in the config file (import/export), in the catalog (codestral), in the snapshot."""

from __future__ import annotations

import pytest

from providers.catalog import catalog_provider
from providers.models import UpstreamModel
from providers.services import config_export, config_import
from routing.config import load_routing_config

pytestmark = pytest.mark.django_db

CONFIG = {"providers": [{
    "name": "mistral", "base_url": "https://api.mistral.ai/v1", "keys": [{"label": "m", "secret": "mk-1"}],
    "models": [{"id": "codestral-latest", "fim": True}, {"id": "mistral-small-latest"}],
}]}


def test_fim_is_imported_exported_and_reaches_the_routing_snapshot():
    config_import(data=CONFIG)

    assert UpstreamModel.objects.get(model_id="codestral-latest").supports_fim
    exported = config_export()["providers"][0]["models"]
    assert exported[0] == {"id": "codestral-latest", "kind": "chat", "fim": True}
    assert "fim" not in exported[1]
    cfg = load_routing_config("t")
    assert cfg.by_name["mistral/codestral-latest"].supports_fim and not cfg.by_name["mistral/mistral-small-latest"].supports_fim
    assert not config_import(data=CONFIG).changes


def test_the_catalog_marks_codestral_as_fim():
    mistral = catalog_provider("mistral")

    assert mistral.model("codestral-latest").supports_fim
    assert not mistral.model("mistral-small-latest").supports_fim
