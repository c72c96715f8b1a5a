"""`tapetum lab`: list and run labelled attack scenarios in network namespaces.

Exit codes: 0 done; 2 usage error; 6 the lab cannot run here (not root, a tool missing, no
network namespaces; the message names the fix); 7 the lab failed while running (torn down);
130 interrupted (SIGINT, SIGTERM or SIGHUP; torn down).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

EXIT_REFUSED = 6
EXIT_FAILED = 7
EXIT_INTERRUPTED = 130


@click.group()
def lab() -> None:
    """Scenario lab: real attack tools in network namespaces, labelled captures."""


@lab.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the scenarios as JSON.")
def list_(as_json: bool) -> None:
    """The scenarios, what they need and what they should trigger."""
    from tapetum.lab.scenarios import BASE_TOOLS, SCENARIOS, TOOL_PACKAGES

    rows: list[dict[str, object]] = []
    t = Table("scenario", "category", "ATT&CK", "tools (Debian packages)", "description")
    for s in SCENARIOS.values():
        packages = sorted({TOOL_PACKAGES[x] for x in s.tools})
        rows.append(
            {
                "name": s.name,
                "description": s.description,
                "category": s.category,
                "technique": s.technique,
                "actor": s.actor,
                "tools": list(s.tools),
                "packages": packages,
            }
        )
        tools = ", ".join(f"{x} ({TOOL_PACKAGES[x]})" for x in s.tools)
        t.add_row(s.name, s.category or "-", s.technique or "-", tools or "-", s.description)
    base = sorted({TOOL_PACKAGES[x] for x in BASE_TOOLS} | {"python3-pyftpdlib"})
    if as_json:
        click.echo(json.dumps({"scenarios": rows, "base_packages": base}, indent=2))
        return
    con = Console()
    con.print(t)
    con.print(f"Every scenario also needs: {' '.join(base)}")


@lab.command()
@click.argument("scenarios", nargs=-1, required=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for SCENARIO.pcap and SCENARIO.labels.json.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of all parameters.")
@click.option(
    "--duration",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds of capture per scenario (the attack runs inside it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print per-scenario results as JSON.")
def run(scenarios: tuple[str, ...], out: Path, seed: int, duration: float, as_json: bool) -> None:
    """Run SCENARIO... (or `all`) on a fresh lab; needs root on Linux."""
    from tapetum.lab.netns import LabError
    from tapetum.lab.preflight import LabRefused, preflight
    from tapetum.lab.runner import MIN_DURATION_S, LabInterrupted, run_lab
    from tapetum.lab.scenarios import SCENARIOS

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    names = list(SCENARIOS) if scenarios == ("all",) else list(scenarios)
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        raise click.UsageError(
            f"unknown scenario(s): {', '.join(unknown)} (see `tapetum lab list`)"
        )
    if duration < MIN_DURATION_S:
        raise click.UsageError(f"--duration must be at least {MIN_DURATION_S:g} s")
    try:
        tools, ftp_py = preflight(names, f"tpl{os.getpid()}")
    except LabRefused as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_REFUSED)
    try:
        results = run_lab(
            names,
            out,
            tools=tools,
            ftp_python=ftp_py,
            seed=seed,
            duration_s=duration,
            log=lambda s: err.print(f"[dim]lab:[/dim] {s}"),
        )
    except LabInterrupted as exc:
        err.print(f"[yellow]stopped:[/yellow] {exc}")
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        err.print("[yellow]stopped:[/yellow] interrupted; the lab was torn down")
        sys.exit(EXIT_INTERRUPTED)
    except LabError as exc:
        err.print(f"[red]error:[/red] {exc} (the lab was torn down)")
        sys.exit(EXIT_FAILED)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    t = Table("scenario", "packets", "bytes", "capture s", "wall s", "dropped", "attacks")
    for r in results:
        t.add_row(r.scenario, f"{r.packets:,}", f"{r.capture_bytes:,}", f"{r.duration_s:.1f}",
                  f"{r.wall_s:.1f}", str(r.kernel_dropped), str(r.attacks))  # fmt: skip
    Console().print(t)


@lab.command()
def clean() -> None:
    """Delete namespaces left behind by lab runs whose process is gone."""
    from tapetum.lab.netns import delete_namespace, stale_namespaces

    stale = stale_namespaces()
    for name in stale:
        delete_namespace(name)
    click.echo(f"removed {len(stale)} stale lab namespace(s)")
