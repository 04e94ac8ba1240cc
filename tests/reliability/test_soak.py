"""A bounded soak: concurrent streaming clients, a third of them leaving at random, for
``ESURGE_SOAK_SECONDS`` (default 20): no unexpected error, pages back to baseline."""

from __future__ import annotations

import json
import os
import random
import threading
import time

import httpx
import pytest

from tests.reliability.conftest import AUTH, assert_back_to_baseline, make_api
from tests.reliability.conftest import serve as serve_api

pytestmark = pytest.mark.slow

CLIENTS = 16
SECONDS = float(os.environ.get("ESURGE_SOAK_SECONDS", "20"))


def test_soak_with_random_disconnects_leaks_nothing(engine, baseline_pages):
    api = make_api(engine, max_queued_requests=64)
    errors: list[str] = []
    counts = {"finished": 0, "left": 0, "refused": 0}
    lock = threading.Lock()
    stop_at = time.monotonic() + SECONDS

    def client(index: int) -> None:
        rng = random.Random(index)
        leaves = index % 3 == 0
        with httpx.Client(base_url=url, headers=AUTH, timeout=120) as http:
            while time.monotonic() < stop_at:
                body = {
                    "messages": [{"role": "user", "content": f"Client {index} says hello."}],
                    "max_tokens": rng.randint(4, 24),
                    "stream": True,
                }
                leave_after = rng.randint(1, 4) if leaves else None
                try:
                    with http.stream("POST", "/v1/chat/completions", json=body) as response:
                        if response.status_code == 429:
                            with lock:
                                counts["refused"] += 1
                            time.sleep(0.2)
                            continue
                        if response.status_code != 200:
                            response.read()
                            errors.append(f"{response.status_code}: {response.text[:200]}")
                            continue
                        seen = 0
                        for line in response.iter_lines():
                            if not line.startswith("data: "):
                                continue
                            payload = line[6:]
                            if payload != "[DONE]" and "error" in json.loads(payload):
                                errors.append(payload[:200])
                            seen += 1
                            if leave_after is not None and seen >= leave_after:
                                break
                        key = (
                            "left"
                            if leave_after is not None and seen >= leave_after
                            else "finished"
                        )
                        with lock:
                            counts[key] += 1
                except httpx.HTTPError as exc:  # a client-side failure is a finding too
                    errors.append(repr(exc))

    with serve_api(api) as uv:
        url = uv.base_url
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=SECONDS + 120)
        # A client that left mid-stream has closed its connection; the server frees the slot
        # when its handler sees the disconnect, which can trail the client by a moment.
        deadline = time.monotonic() + 30
        while api.admission.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert api.admission.in_flight == 0
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.get("/health").status_code == 200
    print(f"soak: {counts}")
    assert errors == []
    assert counts["finished"] > 0 and counts["left"] > 0
    assert_back_to_baseline(engine, baseline_pages)
