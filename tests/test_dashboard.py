"""docs/grafana-livesell.json against a running `livesell serve` (API and hub in one process):
every metric its PromQL names is exported, so the dashboard cannot silently rot; the hub's
metrics show on the API's /metrics too (one registry per process)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from core.embedded import free_port
from tests.conftest import Servers
from tests.faults.procs import Proc, env_for

DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana-livesell.json"
# families the dashboard must show, whichever process exports them
COVERED = ("livesell_hub_", "livesell_http_")

_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                 "offset", "and", "or", "unless", "le", "inf", "nan"}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not a function
    (followed by `(`), a keyword, a label in `{...}` or `by (...)`, or in a string or range."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _PROMQL_WORDS:
            continue
        if match.start() and (expr[match.start() - 1].isdigit() or expr[match.start() - 1] == "."):
            continue  # the exponent or suffix of a number
        names.add(match.group())
    return names


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route="/x/{id}", le!="1"}'
        "[$__rate_interval]))) / sum(rate(b_total[5m])) and on (instance) c > bool 1e3"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def exported(text: str) -> set[str]:
    """Every name a query can select: sample names, and each family's (with the histogram
    suffixes), also for labelled families that have no sample yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def _samples(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


async def test_the_dashboard_reads_only_exported_metrics(servers: Servers, tmp_path: Path) -> None:
    api_port, hub_port = free_port(), free_port()
    serve = Proc(
        ["serve", "--no-demo", "--api-port", str(api_port), "--hub-port", str(hub_port)],
        env_for(servers.pg.url, servers.valkey.url, tmp_path / "data"),
        tmp_path / "serve.log",
    )
    try:
        await serve.wait_port(api_port)
        await serve.wait_port(hub_port)
        async with connect(f"ws://127.0.0.1:{hub_port}/connection/websocket") as viewer:
            await viewer.send(json.dumps({"id": 1, "connect": {}}))
            assert "connect" in json.loads(await viewer.recv())
            async with httpx.AsyncClient(timeout=10) as http:
                api = (await http.get(f"http://127.0.0.1:{api_port}/metrics")).text
                hub = (await http.get(f"http://127.0.0.1:{hub_port}/metrics")).text
    finally:
        assert serve.stop() == 0, serve.output()

    # one registry per process: the API's /metrics shows the hub's state, and vice versa
    assert _samples(api)["livesell_hub_connections"] == 1
    assert _samples(api)["livesell_hub_connections_opened_total"] == 1
    assert _samples(hub)["livesell_hub_connections"] == 1
    available = exported(api)
    assert exported(hub) == available

    dashboard = json.loads(DASHBOARD.read_text())
    queried: dict[str, set[str]] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                queried.setdefault(name, set()).add(panel["title"])
    missing = {name: panels for name, panels in queried.items() if name not in available}
    assert not missing, f"the dashboard queries metrics nobody exports: {missing}"

    # and every API and hub metric has a panel
    families = {
        name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        for name in available
        if name.startswith(COVERED)
    }
    shown = {
        name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for name in queried
    }
    assert families - shown == set(), "exported but on no panel"
