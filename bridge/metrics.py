"""Prometheus metrics shared by the web and worker processes.

Under gunicorn (several processes) set PROMETHEUS_MULTIPROC_DIR so counters add up across
processes; `/metrics` then reads that folder. Gauges that describe the stores (deliveries by state,
queue depth) are computed when scraped, not kept here.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

INBOUND_SMS = Counter(
    "bridge_inbound_sms_total",
    "Inbound SMS webhooks by outcome (matched, unmatched, keyword, duplicate, kept, rejected).",
    ["outcome"],
)
STATUS_CALLBACKS = Counter(
    "bridge_status_callbacks_total",
    "Delivery status callbacks by outcome (applied, ignored, unknown, rejected).",
    ["outcome"],
)
SENDS = Counter(
    "bridge_sends_total",
    "Requests to send an SMS by result (sent, transient, permanent).",
    ["result"],
)
SEND_LATENCY = Histogram(
    "bridge_send_latency_seconds",
    "Time of one send request to Twilio.",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
