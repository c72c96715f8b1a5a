"""`tapetum intel`: import, list and remove threat-intelligence indicators; pull from TAXII.

Exit codes as in `tapetum.cli`: 1 some files could not be imported (the others were), 3 none
could, 4 store error.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tapetum.cli import EXIT_NO_INPUT, EXIT_PARTIAL, EXIT_STORE, store_option
from tapetum.errors import InputError, StoreError

PROBLEMS_SHOWN = 20


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def _import_one(con: Any, parsed: Any) -> dict[str, Any]:
    from tapetum.intel.store import save

    new, merged_stored = save(con, parsed.indicators)
    return {
        "path": parsed.path,
        "format": parsed.format,
        "loaded": len(parsed.indicators),
        "by_type": dict(Counter(i.type for i in parsed.indicators).most_common()),
        "new": new,
        "merged_with_stored": merged_stored,
        "merged_in_file": parsed.merged,
        "skipped": dict(parsed.skipped.most_common()),
        "other_objects": dict(parsed.other_objects.most_common()),
        "problems": parsed.problems,
    }


def _report(con: Console, r: dict[str, Any]) -> None:
    types = ", ".join(f"{k} {v:,}" for k, v in r["by_type"].items()) or "none"
    con.print(
        f"[bold]{r['path']}[/bold] ({r['format']}): {r['loaded']:,} indicators ({types}); "
        f"{r['new']:,} new, {r['merged_with_stored']:,} merged with stored ones, "
        f"{r['merged_in_file']:,} duplicates merged in the file"
    )
    if r["skipped"]:
        con.print("  skipped: " + ", ".join(f"{k} {v:,}" for k, v in r["skipped"].items()))
    if r["other_objects"]:
        con.print(
            "  other STIX objects: " + ", ".join(f"{k} {v}" for k, v in r["other_objects"].items())
        )
    for p in r["problems"][:PROBLEMS_SHOWN]:
        con.print(f"  [yellow]warning:[/yellow] {p}")
    if len(r["problems"]) > PROBLEMS_SHOWN:
        con.print(f"  … {len(r['problems']) - PROBLEMS_SHOWN} more problems")


def _open(store: Path, create: bool = True) -> Any:
    from tapetum.intel.store import connect

    try:
        return connect(store, create=create)
    except StoreError as exc:
        _err().print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_STORE)


@click.group("intel")
def intel() -> None:
    """Threat intelligence: indicators (IPs, CIDRs, domains, URLs, JA3/JA4, certificate SHA-1)
    matched by the `intel` detector during `tapetum analyze`."""


@intel.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--source", help="Source name (default: the file name).")
@click.option(
    "--confidence",
    type=click.IntRange(0, 100),
    default=50,
    show_default=True,
    help="Confidence (0-100) of indicators that do not state one.",
)
@click.option(
    "--valid-days",
    type=click.FloatRange(min=0, min_open=True),
    help="Indicators without an end of validity expire this many days after their start "
    "(STIX valid_from; plain lists: the import).",
)
@store_option("DuckDB store to keep the indicators in (the one `tapetum analyze` uses).")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def import_(
    files: tuple[Path, ...],
    source: str | None,
    confidence: int,
    valid_days: float | None,
    store: Path,
    as_json: bool,
) -> None:
    """Import STIX 2.1 bundles or plain indicator lists (one per line, '#' comments).

    Each file is imported whole or not at all; bad lines and objects are reported and skipped.
    """
    from tapetum.intel.parse import parse_file
    from tapetum.intel.store import time_ns

    err = _err()
    con = _open(store)
    results: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for f in files:
        try:
            parsed = parse_file(
                f, source=source, confidence=confidence, valid_days=valid_days, now_ns=time_ns()
            )
            results.append(_import_one(con, parsed))
        except (InputError, StoreError) as exc:
            # A store failure mid-file rolled its transaction back: nothing from that file.
            failed.append({"path": str(f), "error": str(exc)})
            err.print(f"[red]error:[/red] {exc}; nothing imported from it")
    con.close()
    if as_json:
        click.echo(json.dumps({"imported": results, "failed": failed}, indent=2))
    else:
        out = Console(soft_wrap=True, highlight=False)
        for r in results:
            _report(out, r)
    if failed:
        sys.exit(EXIT_NO_INPUT if not results else EXIT_PARTIAL)


@intel.command("list")
@store_option("DuckDB store holding the indicators.")
@click.option("--type", "type_", help="Only indicators of this type (ip, cidr, domain, …).")
@click.option("--json", "as_json", is_flag=True, help="Print counts and indicators as JSON.")
@click.option("--limit", type=int, default=100, show_default=True, help="Rows shown in a table.")
def list_(store: Path, type_: str | None, as_json: bool, limit: int) -> None:
    """Show the loaded indicators: counts by type and source, then the indicators."""
    from tapetum.intel.store import counts, load
    from tapetum.sinks.eve import ts_text

    if not store.exists():
        _err().print(f"[red]error:[/red] {store}: no such store")
        sys.exit(EXIT_STORE)
    con = _open(store, create=False)
    c = counts(con)
    inds = load(con, type_)
    con.close()

    def when(t: int | None) -> str | None:
        return ts_text(t) if t is not None else None

    if as_json:
        click.echo(
            json.dumps(
                {
                    "by_type": dict(c["type"].most_common()),
                    "by_source": dict(c["source"].most_common()),
                    "indicators": [
                        {
                            "type": i.type,
                            "value": i.value,
                            "source": i.source,
                            "confidence": i.confidence,
                            "valid_from": when(i.valid_from_ns),
                            "valid_until": when(i.valid_until_ns),
                            "name": i.name,
                            "description": i.description,
                            "labels": list(i.labels),
                            "stix_id": i.stix_id,
                            "techniques": list(i.techniques),
                            "tactics": list(i.tactics),
                            "first_imported": when(i.first_imported_ns),
                            "merges": i.merges,
                        }
                        for i in inds
                    ],
                },
                indent=1,
            )
        )
        return
    con_out = Console(soft_wrap=True, highlight=False)
    total = sum(c["type"].values())
    con_out.print(f"[bold]{total:,} indicators[/bold]")
    con_out.print(
        "by type: " + (", ".join(f"{k} {v:,}" for k, v in c["type"].most_common()) or "-")
    )
    con_out.print(
        "by source: " + (", ".join(f"{k} {v:,}" for k, v in c["source"].most_common()) or "-")
    )
    t = Table("type", "value", "source", "confidence", "valid until", "description")
    for i in inds[:limit]:
        until = when(i.valid_until_ns) or "-"
        t.add_row(i.type, i.value, i.source, str(i.confidence), until, i.name or i.description)
    con_out.print(t)
    if len(inds) > limit:
        _err().print(f"[dim]{len(inds) - limit} more indicators not shown (use --limit)[/dim]")


@intel.command("remove")
@click.option("--source", required=True, help="Remove every indicator of this source.")
@store_option("DuckDB store holding the indicators.")
def remove(source: str, store: Path) -> None:
    """Remove the indicators of one source."""
    from tapetum.intel.store import remove_source

    if not store.exists():
        _err().print(f"[red]error:[/red] {store}: no such store")
        sys.exit(EXIT_STORE)
    con = _open(store, create=False)
    n = remove_source(con, source)
    con.close()
    click.echo(f"removed {n:,} indicators of source {source!r}")


@intel.command("pull")
@click.option("--url", required=True, help="TAXII 2.1 API root, e.g. https://taxii.example/api1/")
@click.option("--collection", required=True, help="Collection id.")
@click.option("--source", help="Source name (default: taxii:COLLECTION).")
@click.option("--added-after", help="Only objects added after this time (RFC 3339).")
@click.option("--confidence", type=click.IntRange(0, 100), default=50, show_default=True)
@click.option("--valid-days", type=click.FloatRange(min=0, min_open=True))
@store_option("DuckDB store to keep the indicators in.")
@click.option("--json", "as_json", is_flag=True)
def pull(
    url: str,
    collection: str,
    source: str | None,
    added_after: str | None,
    confidence: int,
    valid_days: float | None,
    store: Path,
    as_json: bool,
) -> None:
    """Fetch a TAXII 2.1 collection and import its indicators (nothing is fetched otherwise)."""
    from tapetum.intel.stix import parse_bundle
    from tapetum.intel.store import time_ns
    from tapetum.intel.taxii import objects_url
    from tapetum.intel.taxii import pull as fetch

    try:
        bundle = fetch(url, collection, added_after=added_after)
        parsed = parse_bundle(
            objects_url(url, collection),
            json.dumps(bundle),
            source or f"taxii:{collection}",
            confidence,
            valid_days,
            time_ns(),
        )
    except InputError as exc:
        _err().print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_NO_INPUT)
    con = _open(store)
    try:
        result = _import_one(con, parsed)
    except StoreError as exc:
        _err().print(f"[red]error:[/red] {exc}; nothing imported")
        sys.exit(EXIT_STORE)
    con.close()
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _report(Console(soft_wrap=True, highlight=False), result)
