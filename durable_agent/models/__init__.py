"""Model providers: ``anthropic`` (the Messages API) and ``offline`` (deterministic, no network)."""

from durable_agent.models.base import ModelError, ModelProvider, ModelRequest, ModelResponse
from durable_agent.models.offline import OfflineModel

__all__ = [
    "ModelError",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "OfflineModel",
    "is_anthropic",
    "provider_for",
    "register_provider",
    "unregister_provider",
]

#: Providers registered in this process by model-name prefix (tests, custom backends).
_custom: dict[str, ModelProvider] = {}


def register_provider(prefix: str, provider: ModelProvider) -> None:
    """Serve every model whose name starts with ``prefix`` with ``provider`` (in this worker process)."""
    _custom[prefix] = provider


def unregister_provider(prefix: str) -> None:
    _custom.pop(prefix, None)


def is_anthropic(model: str) -> bool:
    """Whether ``model`` is served by the Anthropic API (and so needs a key)."""
    return model != "offline" and not any(model.startswith(prefix) for prefix in _custom)


def provider_for(model: str) -> ModelProvider:
    """The provider that serves ``model``: a registered one, ``offline``, or else Anthropic."""
    for prefix in sorted(_custom, key=len, reverse=True):
        if model.startswith(prefix):
            return _custom[prefix]
    if model == "offline":
        return OfflineModel()
    from durable_agent.models.anthropic import AnthropicModel

    return AnthropicModel()
