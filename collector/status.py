"""The status page (`/`) and `/status.json`: what each source is doing, from the sources' own declarations.

`status_data` gathers plain data from the runtime (states and reasons, each source's recent-activity
rings and `status_tables()`, the families with the most series); `render_html` turns it into one
self-contained page (no scripts, no external assets) that refreshes itself. Both run per page view only.
"""

from __future__ import annotations

import html
import platform
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from collector import __version__

if TYPE_CHECKING:
    from collector.runtime import Runtime

__all__ = ["REFRESH_SECONDS", "render_html", "status_data"]

#: The page reloads itself this often (a `<meta http-equiv="refresh">`: works without JavaScript).
REFRESH_SECONDS = 10

#: How many of the largest families the page lists against their series limits.
TOP_FAMILIES = 10


def status_data(rt: Runtime, paths: Iterable[str], ready_reasons: list[str]) -> dict[str, Any]:
    """Everything the status page shows, as JSON-ready data.

    Args:
        rt: the runtime.
        paths: the routes the app serves (the page links only to those that exist).
        ready_reasons: why `/health/ready` would say not ready (empty: ready).
    """
    now = rt.clock()
    sources: dict[str, Any] = {}
    recent: dict[str, list[dict[str, Any]]] = {}
    for source, ctx in rt.sources:
        entry = ctx.status.as_dict()
        try:
            entry["tables"] = [t.as_dict() for t in source.status_tables()]
        except Exception as exc:  # a status bug must never break the page
            entry["tables"] = []
            entry["status_error"] = f"{type(exc).__name__}: {exc}"
        sources[ctx.name] = entry
        for kind, ring in ctx.status.recent.items():
            recent.setdefault(kind, []).extend({"source": ctx.name, **e} for e in ring)
    for entries in recent.values():
        entries.sort(key=lambda e: e["time"], reverse=True)
    families = sorted(rt.metrics.families.values(), key=lambda f: len(f.series), reverse=True)
    paths = set(paths)
    return {
        "version": __version__,
        "python": platform.python_version(),
        "time": now,
        "started_at": rt.started_at,
        "uptime_seconds": round(now - rt.started_at, 3),
        "ready": not ready_reasons,
        "ready_reasons": ready_reasons,
        "state_store": {
            "path": str(rt.store.path),
            "open": rt.store.is_open,
            "last_error": rt.store.last_error,
        },
        "sources": sources,
        "recent": recent,
        "families": [
            {
                "name": f.name,
                "series": len(f.series),
                "limit": f.max_series,
                "used": round(len(f.series) / f.max_series, 4) if f.max_series else 0.0,
            }
            for f in families[:TOP_FAMILIES]
        ],
        "links": sorted(p for p in paths if p in _LINKS),
        "probe": "/probe" in paths,
    }


# Routes worth a link, with what they are; a route the app does not serve gets no link.
_LINKS = {
    "/metrics": "Prometheus metrics",
    "/dora": "DORA report (JSON)",
    "/health": "health (JSON)",
    "/health/ready": "readiness",
    "/health/live": "liveness",
    "/status.json": "this page as JSON",
}

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#1d1f21;
background:#fafafa}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .4em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.3em 0 .8em;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{font-weight:600;padding:1px 6px;border-radius:3px;color:#fff}
.running{background:#2e7d32}.degraded{background:#ef6c00}.failed{background:#c62828}
.starting,.stopped{background:#616161}.note{color:#555;font-size:.9em}
.ok{color:#2e7d32}.bad{color:#c62828}ul.reasons{margin:0;padding-left:1.2em}
code{background:#eee;padding:0 3px}nav a{margin-right:1em}
"""


def render_html(data: dict[str, Any]) -> str:
    """The status page for `status_data(...)`: server-rendered, no scripts, refreshes every few seconds."""
    now = data["time"]
    e = html.escape
    out: list[str] = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>collector {e(data['version'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>collector {e(data['version'])}</h1>",
        f'<p class="note">Prometheus sidecar exporter. Python {e(data["python"])}; up '
        f"{_dur(data['uptime_seconds'])}; page generated {_clock(now)} UTC, refreshes every "
        f"{REFRESH_SECONDS}s.</p>",
        '<nav id="links">'
        + "".join(f'<a href="{e(p.lstrip("/"))}">{e(p)}</a>' for p in data["links"])
        + "</nav>",
    ]
    if data["ready"]:
        out.append('<p id="readiness" class="ok">Ready: the collector serves (state store open).</p>')
    else:
        out.append('<p id="readiness" class="bad">Not ready: ' + e("; ".join(data["ready_reasons"])) + "</p>")
    if data["probe"]:
        out.append(
            '<form id="probe-form" action="probe" method="get">WebSocket probe: '
            '<input name="target" size="40" placeholder="configured target name or allowed ws:// URL"> '
            '<button type="submit">Probe</button></form>'
        )

    out.append("<h2>Sources</h2>")
    if not data["sources"]:
        out.append("<p>No source is enabled: see the README for the COLLECTOR_* settings.</p>")
    else:
        rows = []
        for name, s in data["sources"].items():
            reasons = s["reasons"] or (
                [s["last_error"]] if s["state"] == "failed" and s["last_error"] else []
            )
            since = [
                f"{e(p['message'])} <span class=note>(since {_clock(p['since'])}, {_age(now - p['since'])})</span>"
                for p in s["problems"].values()
            ]
            cell = "<ul class=reasons>" + "".join(f"<li>{r}</li>" for r in since) + "</ul>" if since else ""
            if not since and reasons:
                cell = e(reasons[0])
            last = (
                f"{e(s['last_error'])} <span class=note>({_age(now - s['last_error_at'])})</span>"
                if s["last_error"] and s["last_error_at"]
                else ""
            )
            rows.append(
                f'<tr id="source-{e(name)}"><td>{e(name)}</td>'
                f'<td><span class="state {e(s["state"])}">{e(s["state"])}</span></td>'
                f"<td>{cell}</td><td class=num>{s['restarts']}</td><td>{last}</td></tr>"
            )
        out.append(
            '<table id="sources"><tr><th>source</th><th>state</th><th>reasons</th><th>restarts</th>'
            "<th>last error</th></tr>" + "".join(rows) + "</table>"
        )

    for name, s in data["sources"].items():
        for table in s["tables"]:
            slug = f"{name}-{table['title'].lower().replace(' ', '-')}"
            out.append(f"<h2>{e(table['title'])} <span class=note>({e(name)})</span></h2>")
            if table["note"]:
                out.append(f"<p class=note>{e(table['note'])}</p>")
            out.append(_table(slug, table["columns"], [list(r.values()) for r in table["rows"]], now))

    for kind, entries in data["recent"].items():
        title = {"deliveries": "Recent deliveries and rejects", "probes": "Recent probes"}.get(kind, kind)
        out.append(f"<h2>{e(title)}</h2>")
        columns = (
            ["time", "source", *[k for k in entries[0] if k not in ("time", "source")]] if entries else []
        )
        out.append(_table(f"recent-{kind}", columns, [[en.get(c) for c in columns] for en in entries], now))

    out.append("<h2>Largest metric families</h2>")
    out.append(
        _table(
            "families",
            ["metric", "series", "limit", "used"],
            [[f["name"], f["series"], f["limit"], f"{f['used']:.1%}"] for f in data["families"]],
            now,
        )
    )
    store = data["state_store"]
    out.append(
        f'<p class=note id="store">State store {e(store["path"])}: '
        f"{'open' if store['open'] else 'not open'}"
        + (f"; last error: {e(store['last_error'])}" if store["last_error"] else "")
        + "</p>"
    )
    out.append("</body></html>\n")
    return "\n".join(out)


def _table(table_id: str, columns: list[str], rows: list[list[Any]], now: float) -> str:
    e = html.escape
    if not rows:
        return f'<table id="{e(table_id)}"><tr><td class=note>nothing yet</td></tr></table>'
    head = "".join(f"<th>{e(c.replace('_', ' '))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for col, v in zip(columns, row, strict=False):
            if col == "time" and isinstance(v, int | float):
                cells.append(f"<td>{_clock(v)} <span class=note>({_age(now - v)})</span></td>")
            elif isinstance(v, int | float) and not isinstance(v, bool):
                cells.append(f"<td class=num>{e(_num(v))}</td>")
            else:
                cells.append(f"<td>{e('' if v is None else str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="{e(table_id)}"><tr>{head}</tr>' + "".join(body) + "</table>"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


def _dur(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h {s % 3600 // 60}m"


def _age(seconds: float) -> str:
    return f"{_dur(seconds)} ago"
