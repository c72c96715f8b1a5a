"""`tapetum incidents list|show|verdict` and `tapetum risk ENTITY`.

Exit codes: 0 success; 2 usage error (bad verdict, bad option); 4 store error (no store, cannot
open it) or unknown incident id (NotFound: nothing was changed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tapetum.cli import EXIT_STORE, SEVERITY_NAMES, store_option
from tapetum.errors import NotFound, StoreError

EXIT_NOT_FOUND = 4


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def _fail(exc: Exception, code: int) -> None:
    _err().print(f"[red]error:[/red] {escape(str(exc))}")
    sys.exit(code)


def _ts(ns: int | None) -> str:
    from tapetum.sinks.eve import ts_text

    return ts_text(ns) if ns is not None else ""


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in row.items()}


@click.group()
def incidents() -> None:
    """List incidents, show one, and record analyst verdicts (tp, benign, fp)."""


@incidents.command("list")
@store_option("DuckDB store written by `tapetum analyze`.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--severity",
    type=click.Choice(["high", "medium", "low"]),
    help="Only incidents at least this severe.",
)
@click.option("--entity", help="Only incidents about this address or user.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
def list_command(
    store: Path, as_json: bool, severity: str | None, entity: str | None, limit: int
) -> None:
    """Incidents of every run in the store, most severe first, with their latest verdict."""
    from tapetum.alerts.feedback import list_incidents

    sev = {"high": 1, "medium": 2, "low": 3}.get(severity or "")
    try:
        rows = list_incidents(store, severity=sev, entity=entity, limit=limit)
    except StoreError as exc:
        _fail(exc, EXIT_STORE)
    if as_json:
        click.echo(json.dumps([_jsonable(r) for r in rows], default=str, indent=1))
        return
    t = Table("id", "severity", "entity", "stage", "alerts", "first seen", "verdict", "title")
    for r in rows:
        t.add_row(
            r["incident_id"],
            SEVERITY_NAMES.get(r["severity"], str(r["severity"])),
            escape(str(r["entity"])),
            r["stage"],
            str(r["alert_count"]),
            _ts(r["first_ts_ns"]),
            r["verdict"] or "",
            escape(str(r["title"])),
        )
    Console().print(t)


@incidents.command("show")
@click.argument("incident_id")
@store_option("DuckDB store written by `tapetum analyze`.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_command(incident_id: str, store: Path, as_json: bool) -> None:
    """One incident: summary, ATT&CK, alerts with their explanations, verdicts."""
    from tapetum.alerts.feedback import get_incident, incident_alerts

    try:
        inc = get_incident(store, incident_id)
        alerts = incident_alerts(store, inc)
    except NotFound as exc:
        _fail(exc, EXIT_NOT_FOUND)
    except StoreError as exc:
        _fail(exc, EXIT_STORE)
    if as_json:
        out = _jsonable(inc) | {"alerts": [_jsonable(a) for a in alerts]}
        click.echo(json.dumps(out, default=str, indent=1))
        return
    con = Console()
    sev = SEVERITY_NAMES.get(inc["severity"], str(inc["severity"]))
    con.print(f"[bold]{escape(str(inc['title']))}[/bold]  [dim]{inc['incident_id']}[/dim]")
    con.print(
        f"severity {sev}, confidence {inc['confidence']:.2f}, stage {inc['stage']}, "
        f"{inc['alert_count']} alerts, {_ts(inc['first_ts_ns'])} → {_ts(inc['last_ts_ns'])}"
    )
    con.print(f"ATT&CK: {', '.join(inc['mitre_technique_id'] or [])}")
    con.print(escape(str(inc["summary"])))
    for a in alerts[:50]:
        con.print(f"  • [{escape(a['signature'])}] {escape(str(a['explanation']))}")
    if len(alerts) > 50:
        con.print(f"  • … {len(alerts) - 50} more alerts")
    for v in inc["verdicts"]:
        sup = f", suppression {v['suppression_id']}" if v["suppression_id"] else ""
        con.print(
            f"verdict {v['verdict']} by {escape(v['analyst'])} at {_ts(v['ts_ns'])}{sup}"
            + (f": {escape(v['note'])}" if v["note"] else "")
        )


@incidents.command("verdict")
@click.argument("incident_id")
@click.argument("verdict", type=click.Choice(["tp", "benign", "fp"]))
@store_option("DuckDB store written by `tapetum analyze`.")
@click.option("--note", default="", help="Why (kept with the verdict).")
@click.option("--analyst", default="cli", show_default=True, help="Who gives the verdict.")
@click.option(
    "--suppress",
    is_flag=True,
    help="Also suppress alerts like these (same entity, detector, destination).",
)
@click.option(
    "--days",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Suppression lifetime (0: never expires).",
)
def verdict_command(
    incident_id: str,
    verdict: str,
    store: Path,
    note: str,
    analyst: str,
    suppress: bool,
    days: float,
) -> None:
    """Record a verdict; fp/benign feed back into the next `tapetum analyze` of this store."""
    from tapetum.alerts.feedback import feedback_path, record_verdict

    if suppress and verdict == "tp":
        raise click.UsageError("--suppress is for fp or benign verdicts")
    opts: bool | dict[str, Any] = {"days": days} if suppress else False
    try:
        v = record_verdict(store, incident_id, verdict, note=note, analyst=analyst, suppress=opts)
    except NotFound as exc:
        _fail(exc, EXIT_NOT_FOUND)
    except StoreError as exc:
        _fail(exc, EXIT_STORE)
    con = Console()
    con.print(f"verdict {v.verdict} recorded on incident {v.incident_id} ({v.verdict_id})")
    if v.suppression_id:
        from tapetum.alerts.feedback import list_suppressions

        s = next(x for x in list_suppressions(store) if x.suppression_id == v.suppression_id)
        until = _ts(s.expires_ns) if s.expires_ns is not None else "never"
        con.print(
            f"suppression {s.suppression_id}: entity {escape(s.entity)}, signature "
            f"{escape(s.signature or 'any')}, destination {escape(s.dest or 'any')}, "
            f"expires {until}"
        )
    if verdict != "tp":
        con.print(f"[dim]feedback for the next analysis: {feedback_path(store)}[/dim]")


@click.command("risk")
@click.argument("entity")
@store_option("DuckDB store written by `tapetum analyze`.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--half-life-h",
    type=click.FloatRange(min=0.01),
    default=24.0,
    show_default=True,
    help="Hours for an incident's contribution to halve.",
)
def risk(entity: str, store: Path, as_json: bool, half_life_h: float) -> None:
    """The entity's decaying risk score, its reasons and the likely next attack stage."""
    from tapetum.alerts.risk import risk_report

    try:
        rep = risk_report(store, entity, half_life_s=half_life_h * 3600.0)
    except NotFound as exc:
        _fail(exc, EXIT_NOT_FOUND)
    except StoreError as exc:
        _fail(exc, EXIT_STORE)
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(rep), indent=1).decode())
        return
    con = Console()
    con.print(
        f"[bold]{escape(entity)}[/bold]: risk {rep.score:.0f}/100 ([bold]{rep.level}[/bold]), "
        f"{rep.incidents} incident(s), half-life {half_life_h:g} h"
    )
    for r in rep.reasons:
        con.print(f"  • {escape(r)}")
    if rep.likely_next:
        con.print("[bold]Likely next[/bold]:")
        for n in rep.likely_next:
            con.print(f"  → {n.stage} ({n.technique}): {escape(n.why)}")
