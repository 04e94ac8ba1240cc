"""Per-API-key usage counters that the OpenAI server owns and records into.

Series are labelled by the key's *label* (a name chosen by the operator), never by the key
itself, so a scrape cannot leak credentials.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

MAX_KEY_LABEL_LENGTH = 128


class ApiKeyMetrics:
    """Requests and tokens per API key label.

    Args:
        registry: where the series live; default a new ``CollectorRegistry`` of their own
            (render it next to the engine's with ``render_prometheus``).

    Attributes:
        registry: the registry holding the three counters.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ["key_label"]
        self._requests = Counter(
            "esurge:api_key_requests",
            "Requests served, per API key label.",
            labels,
            registry=self.registry,
        )
        self._prompt_tokens = Counter(
            "esurge:api_key_prompt_tokens",
            "Prompt tokens billed, per API key label.",
            labels,
            registry=self.registry,
        )
        self._completion_tokens = Counter(
            "esurge:api_key_completion_tokens",
            "Completion tokens billed, per API key label.",
            labels,
            registry=self.registry,
        )

    def record_request(self, key_label: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one served request of the key labelled ``key_label`` and its tokens.

        Raises:
            ValueError: an empty or over-long label, or a negative token count.
        """
        if not key_label or len(key_label) > MAX_KEY_LABEL_LENGTH:
            raise ValueError(
                f"an API key label must have 1 to {MAX_KEY_LABEL_LENGTH} characters; "
                f"got {len(key_label)}"
            )
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError(
                f"token counts must be >= 0; got prompt_tokens={prompt_tokens}, "
                f"completion_tokens={completion_tokens}"
            )
        self._requests.labels(key_label).inc()
        if prompt_tokens:
            self._prompt_tokens.labels(key_label).inc(prompt_tokens)
        if completion_tokens:
            self._completion_tokens.labels(key_label).inc(completion_tokens)
