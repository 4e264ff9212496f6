"""A small soak (32 concurrent streaming clients, mixed constrained/free, random disconnects)
against the main server: zero unexpected errors and the KV pool back at baseline."""
import asyncio

import pytest

from benchmarks.bench_soak import is_at_baseline, run_soak
from reliability_helpers import assert_serves

pytestmark = pytest.mark.slow


def test_soak_32_clients(server, http):
    result = asyncio.run(run_soak(server.url, server.api_key, num_clients=32, max_tokens=5,
                                  disconnect_rate=0.25, seed=1, server_pid=server.proc.pid))
    assert not result.errors, result.errors[:5]
    assert result.num_completed + result.num_disconnected == 32
    assert result.num_disconnected > 0 and result.num_completed > 0
    assert is_at_baseline(result.stats_after), result.stats_after
    server.wait_idle()
    assert_serves(http)
