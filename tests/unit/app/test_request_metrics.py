"""The dashboard's request figures, read back from the app's own Prometheus registry."""

from __future__ import annotations

import pytest

from app.api.metrics import ApiMetrics


def test_traffic_counts_errors_and_estimates_latency_quantiles() -> None:
    metrics = ApiMetrics("test")
    route = "/users/{user_id}/recommendations"
    for status, seconds in [(200, 0.002)] * 90 + [(404, 0.03)] * 8 + [(500, 0.2)] * 2:
        metrics.requests.labels("GET", route, str(status)).inc()
        metrics.latency.labels("GET", route).observe(seconds)
    metrics.requests.labels("POST", "/ratings", "201").inc()
    metrics.latency.labels("POST", "/ratings").observe(20.0)  # beyond the last bucket

    traffic = {t.route: t for t in metrics.traffic()}
    recs = traffic[route]
    assert (recs.requests, recs.client_errors, recs.server_errors) == (100, 8, 2)
    assert recs.mean_ms == pytest.approx((90 * 2 + 8 * 30 + 2 * 200) / 100)
    # the median lies in the (1 ms, 2.5 ms] bucket, the 95th in (25 ms, 50 ms], the
    # 99th in (100 ms, 250 ms]: interpolated linearly inside each
    assert recs.p50_ms is not None
    assert 1.0 < recs.p50_ms <= 2.5
    assert recs.p95_ms is not None
    assert 25.0 < recs.p95_ms <= 50.0
    assert recs.p99_ms is not None
    assert 100.0 < recs.p99_ms <= 250.0
    assert recs.per_second > 0
    # a quantile in the open last bucket is not made up
    assert traffic["/ratings"].p50_ms is None
    assert metrics.traffic()[0].route == route  # busiest first
