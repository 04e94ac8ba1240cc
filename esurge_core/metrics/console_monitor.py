"""``ConsoleMonitor``: a live terminal view of one engine's metrics (rich).

It shows request and token throughput, running and waiting requests, KV-cache and
prefix-cache use, preemptions and compilations, and TTFT / end-to-end latency percentiles
over a rolling window of recent requests. Rates are computed between snapshots at most
``rate_window`` seconds apart. ``render()`` returns one frame as a rich renderable;
``render_to_string()`` prints one frame to text (for logs and tests).
"""

from __future__ import annotations

import io
from collections import deque

from rich.console import Console, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from esurge_core.metrics.engine_metrics import EngineMetrics
from esurge_core.metrics.snapshot import MetricsSnapshot


class ConsoleMonitor:
    """A live view of ``metrics`` in the terminal.

    Args:
        metrics: the engine's metrics (``engine.metrics``).
        refresh_interval: seconds between frames of the live view.
        rate_window: seconds of history the throughput rates average over.
        console: where the live view draws; default a rich ``Console`` on stdout.
    """

    def __init__(
        self,
        metrics: EngineMetrics,
        *,
        refresh_interval: float = 1.0,
        rate_window: float = 10.0,
        console: Console | None = None,
    ) -> None:
        if refresh_interval <= 0 or rate_window <= 0:
            raise ValueError(
                "refresh_interval and rate_window must be > 0 seconds; got "
                f"{refresh_interval} and {rate_window}"
            )
        self.metrics = metrics
        self.refresh_interval = refresh_interval
        self.rate_window = rate_window
        self.console = console or Console()
        self._history: deque[MetricsSnapshot] = deque()
        self._live: Live | None = None

    # ------------------------------------------------------------------ frames

    def render(self) -> RenderableType:
        """Take a snapshot and return one frame of the view."""
        now = self.metrics.snapshot()
        history = self._history
        history.append(now)
        while len(history) > 2 and now.time - history[0].time > self.rate_window:
            history.popleft()
        return self._frame(now, history[0])

    def render_to_string(self, width: int = 100) -> str:
        """One frame as plain text ``width`` columns wide."""
        buffer = io.StringIO()
        console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
        console.print(self.render())
        return buffer.getvalue()

    def _frame(self, now: MetricsSnapshot, then: MetricsSnapshot) -> RenderableType:
        elapsed = now.time - then.time

        def rate(current: int, previous: int) -> str:
            if elapsed <= 0:
                return "-"
            return f"{(current - previous) / elapsed:,.1f}/s"

        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_column(style="bold")
        table.add_column(justify="right")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(now.requests_by_reason.items()) if v)
        table.add_row(
            "Running",
            str(now.num_requests_running),
            "Waiting",
            str(now.num_requests_waiting),
        )
        table.add_row(
            "Finished",
            f"{now.finished_requests} ({reasons or 'none'})",
            "Requests",
            rate(now.finished_requests, then.finished_requests),
        )
        table.add_row(
            "Prompt tokens",
            f"{now.prompt_tokens:,}",
            "Prompt rate",
            rate(now.prompt_tokens, then.prompt_tokens),
        )
        table.add_row(
            "Generated tokens",
            f"{now.generation_tokens:,}",
            "Generation rate",
            rate(now.generation_tokens, then.generation_tokens),
        )
        table.add_row(
            "KV cache",
            f"{now.kv_cache_usage:.1%} used",
            "Pages free / cached",
            f"{now.kv_cache_free_pages} / {now.kv_cache_cached_pages} "
            f"of {now.kv_cache_total_pages}",
        )
        table.add_row(
            "Prefix cache hits",
            f"{now.prefix_cache_hit_rate:.1%}",
            "Hit / queried tokens",
            f"{now.prefix_cache_hits:,} / {now.prefix_cache_queries:,}",
        )
        table.add_row(
            "Preemptions",
            str(now.num_preemptions),
            "Compilations",
            str(now.num_compilations),
        )
        table.add_row(
            "TTFT p50 / p99",
            f"{_seconds(now.ttft_p50)} / {_seconds(now.ttft_p99)}",
            "E2E p50 / p99",
            f"{_seconds(now.e2e_p50)} / {_seconds(now.e2e_p99)}",
        )
        return Panel(table, title=f"eSurge · {self.metrics.model_name}", expand=False)

    # ------------------------------------------------------------------ live view

    @property
    def is_running(self) -> bool:
        """Whether the live view is drawing."""
        return self._live is not None

    def start(self) -> None:
        """Start redrawing the view every ``refresh_interval`` seconds (idempotent)."""
        if self._live is None:
            self._live = Live(
                console=self.console,
                get_renderable=self.render,
                refresh_per_second=1.0 / self.refresh_interval,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()

    def stop(self) -> None:
        """Stop the live view, leaving the last frame on screen (idempotent)."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1.0:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"
