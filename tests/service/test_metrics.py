"""Metrics of one process and of several: counts, summing over workers, the text format."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from kvbox.core.models import Totals
from kvbox.service.metrics import (
    GROUP_COMMIT,
    HTTP_REQUESTS,
    WEBHOOK_DELIVERIES,
    Metrics,
    Snapshot,
    histogram_of,
    render,
)

ROUTE = "/v2/key-value-stores/{store}/records/{key}"


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, parsed by the reference parser."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text: bytes, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_with_latency_and_bytes() -> None:
    metrics = Metrics()
    metrics.request(ROUTE, "GET", 200, 0.002, 0, 1024)
    metrics.request(ROUTE, "GET", 200, 0.3, 0, 1024)
    metrics.request(ROUTE, "PUT", 201, 0.004, 512, 2)
    metrics.request(ROUTE, "GET", 404, 0.001, 0, 80)
    text = render(metrics.collect())
    assert value(text, "kvbox_http_requests_total", route=ROUTE, method="GET", status="200") == 2
    assert value(text, "kvbox_http_requests_total", route=ROUTE, method="GET", status="404") == 1
    # The latency histogram is per route and method, over every status.
    assert value(text, "kvbox_http_request_duration_seconds_count", route=ROUTE, method="GET") == 3
    assert value(text, "kvbox_http_request_duration_seconds_bucket", route=ROUTE, method="GET", le="0.001") == 1
    assert value(text, "kvbox_http_request_duration_seconds_bucket", route=ROUTE, method="GET", le="0.0025") == 2
    assert value(text, "kvbox_http_request_duration_seconds_bucket", route=ROUTE, method="GET", le="+Inf") == 3
    assert abs(value(text, "kvbox_http_request_duration_seconds_sum", route=ROUTE, method="GET") - 0.303) < 1e-9
    assert value(text, "kvbox_http_request_bytes_total", route=ROUTE, method="PUT") == 512
    assert value(text, "kvbox_http_response_bytes_total", route=ROUTE, method="GET") == 2128


def test_workers_are_summed_from_their_published_snapshots(tmp_path: Path) -> None:
    this = Metrics(directory=tmp_path)
    other = Metrics()
    this.request(ROUTE, "GET", 200, 0.001, 0, 10)
    other.request(ROUTE, "GET", 200, 0.001, 0, 10)
    other.request(ROUTE, "GET", 200, 0.001, 0, 10)
    other.counter(WEBHOOK_DELIVERIES).inc("succeeded")
    (tmp_path / "999999.json").write_text(other.snapshot().to_json())  # another worker's last publish
    this.publish()
    assert (tmp_path / f"{__import__('os').getpid()}.json").exists()
    this.request(ROUTE, "GET", 200, 0.001, 0, 10)  # after the publish: the scrape takes its own counts fresh
    text = render(this.collect())
    assert value(text, "kvbox_http_requests_total", route=ROUTE, method="GET", status="200") == 4
    assert value(text, "kvbox_http_request_duration_seconds_count", route=ROUTE, method="GET") == 4
    assert value(text, "kvbox_webhook_deliveries_total", outcome="succeeded") == 1


def test_a_torn_or_foreign_file_in_the_directory_is_skipped(tmp_path: Path) -> None:
    metrics = Metrics(directory=tmp_path)
    (tmp_path / "1.json").write_text('{"values": {"kvbox_http_requests_total": [["/x", "GET"')
    (tmp_path / "2.json").write_text('{"values": {"no_such_family": [["a", 1]]}}')
    metrics.request(ROUTE, "GET", 200, 0.001, 0, 10)
    assert value(render(metrics.collect()), "kvbox_http_requests_total", route=ROUTE, method="GET", status="200") == 1


def test_sources_add_their_counts_when_a_snapshot_is_taken() -> None:
    metrics = Metrics()
    sizes = {1: 5, 3: 2, 300: 1}
    metrics.watch(lambda snap: snap.add_buckets(GROUP_COMMIT, (), histogram_of(sizes, GROUP_COMMIT.bounds)))
    text = render(metrics.collect())
    assert value(text, "kvbox_index_group_commit_size_count") == 8
    assert value(text, "kvbox_index_group_commit_size_bucket", le="1.0") == 5
    assert value(text, "kvbox_index_group_commit_size_bucket", le="4.0") == 7
    assert value(text, "kvbox_index_group_commit_size_bucket", le="+Inf") == 8
    assert value(text, "kvbox_index_group_commit_size_sum") == 5 + 6 + 300


def test_totals_are_gauges_and_label_values_are_escaped() -> None:
    snap = Snapshot()
    snap.add(HTTP_REQUESTS, ('a"b\\c\nd', "GET", "200"), 1)
    text = render(snap, Totals(stores=2, records=7, bytes=4096))
    assert value(text, "kvbox_stores") == 2
    assert value(text, "kvbox_records") == 7
    assert value(text, "kvbox_stored_bytes") == 4096
    assert value(text, "kvbox_http_requests_total", route='a"b\\c\nd', method="GET", status="200") == 1


def test_snapshots_survive_their_json_form() -> None:
    metrics = Metrics()
    metrics.request(ROUTE, "GET", 200, 0.01, 3, 4)
    again = Snapshot.from_json(metrics.snapshot().to_json())
    assert render(again) == render(metrics.snapshot())


def test_an_unchanged_snapshot_is_not_written_again(tmp_path: Path) -> None:
    metrics = Metrics(directory=tmp_path)
    metrics.publish()
    (written,) = tmp_path.glob("*.json")
    written.write_text("{}")
    metrics.publish()
    assert written.read_text() == "{}"
    metrics.request(ROUTE, "GET", 200, 0.01, 3, 4)
    metrics.publish()
    assert written.read_text() != "{}"
