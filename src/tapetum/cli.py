"""Command line: `tapetum analyze`, `tapetum sql`.

Exit codes: 0 success (input warnings are reported, not fatal); 1 some inputs could not be read
(the rest were analysed); 2 usage error; 3 no input could be read; 4 store error; 5 config error;
6 model error (a `--model` directory missing, damaged, edited or from another version).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tapetum import __version__
from tapetum.errors import ConfigError, StoreError, TapetumError

EXIT_PARTIAL = 1
EXIT_NO_INPUT = 3
EXIT_STORE = 4
EXIT_CONFIG = 5
EXIT_MODEL = 6
DEFAULT_STORE = "tapetum.duckdb"
SEVERITY_NAMES = {1: "high", 2: "medium", 3: "low"}


def demo_capture() -> Path:
    """The small capture bundled with the package."""
    return Path(str(resources.files("tapetum") / "data" / "demo.pcap"))


def store_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--store",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_STORE,
        show_default=True,
        help=help_text,
    )


JSONL_HELP = "Also write EVE-shaped JSON lines to this file ('-' for standard output)."


def output_options(
    store_help: str, *, jsonl_help: str = JSONL_HELP
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--store, --no-store, --jsonl, --json and --config, as the pipeline commands take them."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option(
            "--config",
            "config_path",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="TOML configuration file.",
        )(f)
        f = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")(f)
        f = click.option(
            "--jsonl",
            "jsonl_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help=jsonl_help,
        )(f)
        f = click.option("--no-store", is_flag=True, help="Do not write the DuckDB store.")(f)
        return store_option(store_help)(f)

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tapetum")
def main() -> None:
    """Tapetum: network detection and response that explains itself."""


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@main.command()
@click.argument("captures", nargs=-1, type=click.Path(path_type=Path))
@click.option("--demo", is_flag=True, help="Analyse the small capture bundled with Tapetum.")
@output_options("DuckDB file to store flows, metadata, alerts and incidents in.")
@click.option("--no-progress", is_flag=True, help="Do not show a progress bar.")
@click.option("--model", "model", type=click.Path(path_type=Path),
              help="Start from a model made by `tapetum learn` (a model directory).")  # fmt: skip
@click.option("--update-model", is_flag=True,
              help="Save what the detectors learnt while analysing back into --model.")  # fmt: skip
@click.option("--export", "exports", multiple=True, metavar="KIND:TARGET",
              help="Also export to a SIEM (repeatable): ocsf:FILE, ecs:FILE, syslog[+cef]:"
              "udp|tcp://HOST:PORT, webhook[+slack]:URL. See docs/exports.md.")  # fmt: skip
@click.option("--pseudonymize-key-file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Pseudonymise addresses (Crypto-PAn) and user names in --export outputs "
              "with the key in this file.")  # fmt: skip
@click.option("--pseudonymize", is_flag=True,
              help="Same, key from the environment variable TAPETUM_PSEUDONYM_KEY.")  # fmt: skip
def analyze(
    captures: tuple[Path, ...],
    demo: bool,
    store: Path,
    no_store: bool,
    jsonl_path: Path | None,
    as_json: bool,
    config_path: Path | None,
    no_progress: bool,
    model: Path | None = None,
    update_model: bool = False,
    exports: tuple[str, ...] = (),
    pseudonymize_key_file: Path | None = None,
    pseudonymize: bool = False,
) -> None:
    """Analyse captures (pcap, pcapng, .gz) or sensor logs (Zeek folders or logs, Suricata EVE,
    auth.log, EVTX, auth JSON lines; detected by content) and print explained incidents."""
    from tapetum.commands._common import (
        close_sinks,
        default_intel_store,
        file_progress,
        load_config_or_exit,
        open_sinks,
        print_result,
    )
    from tapetum.pipeline import Pipeline, run_id_for

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    paths = [str(p) for p in captures]
    if demo:
        paths.insert(0, str(demo_capture()))
    if not paths:
        raise click.UsageError("give one or more capture files, or --demo")
    config = load_config_or_exit(config_path, err)
    # The run id is taken before the store is named as the intel source, so a re-run (now with
    # the store existing) still replaces its own rows.
    run_id = run_id_for(paths, config)
    if update_model and model is None:
        raise click.UsageError("--update-model needs --model")
    from tapetum.learning import config_hash

    cfg_hash = config_hash(config)  # before the CLI fills in the intel store below
    default_intel_store(config, store)  # indicators from `tapetum intel import`
    detectors = None  # the model's (checked before anything is written), else the config's
    if model is not None:
        from tapetum.learning import load_model

        try:
            detectors, manifest, model_warnings = load_model(model, config, cfg_hash)
        except TapetumError as exc:
            err.print(f"[red]error:[/red] {exc}")
            sys.exit(EXIT_MODEL)
        for w in model_warnings:
            err.print(f"[yellow]warning:[/yellow] {w}")
    try:
        sinks, db = open_sinks(
            config,
            store=None if no_store else store,
            jsonl_path=jsonl_path,
            run_id=run_id,
            inputs=paths,
        )
        if (pseudonymize_key_file or pseudonymize) and not exports:
            raise click.UsageError("--pseudonymize* apply to --export outputs: give one")
        if exports:
            from tapetum.registry import build_export
            from tapetum.sinks.pseudonym import Pseudonymizer, wrap

            pseud = None
            if pseudonymize_key_file is not None:
                pseud = Pseudonymizer.from_key_file(pseudonymize_key_file)
            elif pseudonymize:
                pseud = Pseudonymizer.from_env()
            sinks.extend(wrap(pseud)(build_export(spec, config)) for spec in exports)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_CONFIG)
    except StoreError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_STORE)
    except OSError as exc:
        err.print(f"[red]error:[/red] {exc.filename or jsonl_path}: {exc.strerror}")
        sys.exit(EXIT_STORE)

    fb_file = Path(f"{store}.feedback.json")  # analyst verdicts (alerts/feedback.py)
    feedback = None
    if not no_store and fb_file.exists():
        from tapetum.alerts.feedback import Feedback

        try:
            feedback = Feedback.load(fb_file)
        except StoreError as exc:
            err.print(f"[red]error:[/red] {exc}")
            sys.exit(EXIT_STORE)
    pipe = Pipeline(config, sinks, detectors=detectors, feedback=feedback)
    show_progress = not no_progress and err.is_terminal
    progress, on_progress, tasks = file_progress(err, disable=not show_progress, description="read")
    with progress:
        for p in paths:
            rep = pipe.run_file(p, on_progress)
            if p in tasks:
                progress.update(tasks[p], completed=progress.tasks[tasks[p]].total)
            if rep.error:
                err.print(f"[red]error:[/red] {rep.error}")
            for w in rep.warnings:
                err.print(f"[yellow]warning:[/yellow] {w}")
        summary = pipe.finish()
    if model is not None and update_model:
        from tapetum.learning import update_model as save_update

        try:
            save_update(model, pipe.detectors, config, summary, manifest, cfg_hash)
        except OSError as exc:
            err.print(f"[red]error:[/red] {model}: cannot update the model: {exc}")
            sys.exit(EXIT_MODEL)
    close_sinks(sinks, db, summary, err)
    print_result(summary, as_json=as_json, store=None if no_store else store)
    from tapetum.commands.respond import respond_after_run  # playbooks: docs/response.md

    respond_after_run(summary.incidents, config, None if no_store else store, to_stderr=as_json)
    readable = [f for f in summary.files if f.error is None]
    if not readable:
        sys.exit(EXIT_NO_INPUT)
    if len(readable) < len(summary.files):
        sys.exit(EXIT_PARTIAL)


def _replace_run(db: Any, run_id: str) -> None:
    """Re-analysing the same inputs with the same config replaces that run's rows."""
    from tapetum.sinks.duckdb import TABLES

    for table in TABLES:
        db.con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])


def _print_summary(con: Console, s: Any, store: Path | None) -> None:
    from tapetum.sinks.eve import ts_text

    con.rule("[bold]Tapetum analysis")
    files = ", ".join(Path(f.path).name for f in s.files)
    when = ""
    if s.first_ns is not None:
        when = f"{ts_text(s.first_ns)} → {ts_text(s.last_ns)} ({s.duration_s:,.1f} s)"
    con.print(f"[bold]Input[/bold]    {files}")
    con.print(
        f"[bold]Traffic[/bold]  {s.packets:,} packets, {_human_bytes(s.bytes)}, "
        f"{s.flows:,} flows  {when}"
    )
    odd = {k: v for k, v in s.packet_status.items() if k != "ok"}
    if odd:
        con.print(
            "[bold]Not flows[/bold] "
            + ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in odd.items())
        )
    if s.protocols:
        con.print(
            "[bold]Protocols[/bold] "
            + ", ".join(f"{k} {v:,}" for k, v in s.protocols.most_common())
        )
    if s.services:
        con.print(
            "[bold]Services[/bold]  " + ", ".join(f"{k} {v:,}" for k, v in s.services.most_common())
        )
    if s.talkers:
        top = ", ".join(f"{ip} ({_human_bytes(b)})" for ip, b in s.talkers.most_common(5))
        con.print(f"[bold]Top talkers[/bold] (bytes sent + received): {top}")
    for title, counter in (
        ("DNS names", s.dns_names),
        ("TLS server names", s.tls_snis),
        ("JA4 fingerprints", s.ja4s),
        ("HTTP hosts", s.http_hosts),
        ("SSH software", s.ssh_software),
    ):
        if counter:
            top = ", ".join(f"{k} ({v})" for k, v in counter.most_common(5))
            more = f" … +{len(counter) - 5} more" if len(counter) > 5 else ""
            con.print(f"[bold]{title}[/bold]: {top}{more}")
    dropped = {k: v for k, v in s.meter.items() if v and k not in ("flows", "peak_active_flows")}
    dropped.update({k: v for k, v in s.protocol_stats.items() if v})
    if dropped:
        con.print(
            "[bold]Counted[/bold]: "
            + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in sorted(dropped.items()))
        )
    mal = {k: v for k, v in s.protocol_malformed.items() if v}
    if mal:
        con.print(
            "[bold]Malformed payloads[/bold]: " + ", ".join(f"{k} {v}" for k, v in mal.items())
        )
    for f in s.files:
        skipped = {k: v for k, v in f.counters.items() if v and not k.startswith("warnings.")}
        if skipped:
            con.print(
                f"[yellow]{Path(f.path).name}[/yellow]: "
                + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in skipped.items())
            )
    con.print()
    con.print(f"[bold]Alerts[/bold]: {len(s.alerts)}   [bold]Incidents[/bold]: {len(s.incidents)}")
    for inc in s.incidents:
        sev = SEVERITY_NAMES.get(inc.severity, str(inc.severity))
        color = {"high": "red", "medium": "yellow"}.get(sev, "cyan")
        con.print(
            f"[{color}]■ {sev}[/{color}] [bold]{inc.title}[/bold] "
            f"[dim]({', '.join(inc.mitre_technique_id)}; confidence {inc.confidence:.2f}; "
            f"{inc.alert_count} alert{'s' if inc.alert_count != 1 else ''})[/dim]"
        )
        alerts = [a for a in s.alerts if a.alert_id in set(inc.alert_ids)]
        for a in alerts[:5]:
            con.print(f"    • {a.explanation}")
        if len(alerts) > 5:
            con.print(f"    • … {len(alerts) - 5} more alerts")
    if store is not None:
        con.print(
            f"\n[dim]Stored in {store}; query with: tapetum sql --store {store} "
            f'"SELECT * FROM incidents"[/dim]'
        )


@main.command()
@click.argument("query")
@store_option("DuckDB store written by `tapetum analyze`.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
@click.option("--limit", type=int, default=1000, show_default=True, help="Rows shown in a table.")
def sql(query: str, store: Path, fmt: str, limit: int) -> None:
    """Run a SQL query against the store (tables: runs, flows, dns, tls, http, ssh, alerts,
    incidents)."""
    from tapetum.store.query import run_query

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    if not store.exists():
        err.print(f"[red]error:[/red] {store}: no such store; run `tapetum analyze` first")
        sys.exit(EXIT_STORE)
    try:
        names, rows = run_query(store, query)
    except StoreError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_STORE)
    if fmt == "json":
        click.echo(
            json.dumps([dict(zip(names, r, strict=True)) for r in rows], default=str, indent=1)
        )
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(names)
        w.writerows(rows)
        click.echo(buf.getvalue(), nl=False)
    else:
        t = Table(*names, show_lines=False)
        for r in rows[:limit]:
            t.add_row(*("" if v is None else str(v) for v in r))
        Console().print(t)
        if len(rows) > limit:
            err.print(f"[dim]{len(rows) - limit} more rows not shown (use --limit)[/dim]")


def _register_commands() -> None:
    """Subcommands that live in `tapetum.commands` (one line each)."""
    from tapetum.commands.bench import bench
    from tapetum.commands.eval import eval_command

    main.add_command(eval_command)
    main.add_command(bench)
    main.add_command(__import__("tapetum.commands.lab", fromlist=["lab"]).lab)
    main.add_command(__import__("tapetum.commands.intel", fromlist=["intel"]).intel)
    main.add_command(__import__("tapetum.commands.dga", fromlist=["dga"]).dga)
    main.add_command(__import__("tapetum.commands.learn", fromlist=["learn"]).learn)
    main.add_command(__import__("tapetum.commands.ingest", fromlist=["ingest"]).ingest)
    main.add_command(__import__("tapetum.commands.watch", fromlist=["watch"]).watch)
    main.add_command(__import__("tapetum.commands.collect", fromlist=["collect"]).collect)
    main.add_command(__import__("tapetum.commands.respond", fromlist=["x"]).respond_group)
    main.add_command(__import__("tapetum.commands.incidents", fromlist=["x"]).incidents)
    main.add_command(__import__("tapetum.commands.incidents", fromlist=["x"]).risk)
    main.add_command(__import__("tapetum.commands.serve", fromlist=["x"]).serve)
    main.add_command(__import__("tapetum.commands.serve", fromlist=["x"]).token)


_register_commands()


def run() -> None:
    try:
        main()
    except TapetumError as exc:
        Console(stderr=True, soft_wrap=True, highlight=False).print(f"[red]error:[/red] {exc}")
        sys.exit(2)
