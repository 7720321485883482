"""Model providers: ``anthropic`` (the Messages API) and ``offline`` (deterministic, no network)."""

from durable_agent.models.base import ModelError, ModelProvider, ModelRequest, ModelResponse
from durable_agent.models.offline import OfflineModel

__all__ = ["ModelError", "ModelProvider", "ModelRequest", "ModelResponse", "OfflineModel", "provider_for"]


def provider_for(model: str) -> ModelProvider:
    """The provider that serves ``model``: ``offline`` or, for anything else, Anthropic."""
    if model == "offline":
        return OfflineModel()
    from durable_agent.models.anthropic import AnthropicModel

    return AnthropicModel()
