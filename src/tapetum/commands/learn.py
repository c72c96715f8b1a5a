"""`tapetum learn CAPTURE… --out MODEL_DIR`: learn normal from captures taken as normal and save
the detectors' states as a model for `tapetum analyze --model` (see tapetum.learning)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tapetum.errors import ConfigError, ModelError

EXIT_NO_INPUT = 3
EXIT_CONFIG = 5
EXIT_MODEL = 6


@click.command(name="learn")
@click.argument(
    "captures", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model directory to write (replaced atomically if it exists).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML configuration file (use the same one with `analyze --model`).",
)
@click.option(
    "--detectors",
    "names",
    help="Comma-separated detectors to learn (default: the config's default set; kitsune is "
    "off by default and can be named here).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--no-progress", is_flag=True, help="Do not show a progress bar.")
def learn(
    captures: tuple[Path, ...],
    out: Path,
    config_path: Path | None,
    names: str | None,
    as_json: bool,
    no_progress: bool,
) -> None:
    """Learn what normal looks like from CAPTURES (taken as normal) and save it to --out.

    Every chosen detector learns: the anomaly detector takes the whole input as its warm-up,
    kitsune trains after its grace periods and then learns only packets under its threshold, the
    baselines of the other detectors learn from their non-alerting windows. Alerts raised while
    learning are counted (and not learnt). Exit codes: 3 no input readable, 5 config error,
    6 model cannot be written.
    """
    from tapetum.commands._common import file_progress, load_config_or_exit
    from tapetum.learning import (
        Learnt,
        finish_learning,
        input_record,
        learning_config,
        learning_names,
        save_model,
    )
    from tapetum.pipeline import Pipeline
    from tapetum.registry import build_detectors

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    config = load_config_or_exit(config_path, err)
    try:
        chosen = learning_names(config, [n.strip() for n in names.split(",")] if names else None)
        detectors = build_detectors(learning_config(config), chosen)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_CONFIG)
    pipe = Pipeline(learning_config(config), detectors=detectors)
    progress, on_progress, _ = file_progress(
        err, disable=no_progress or not err.is_terminal, description="learn"
    )
    with progress:
        for p in captures:
            rep = pipe.run_file(str(p), on_progress)
            if rep.error:
                err.print(f"[red]error:[/red] {rep.error}")
            for w in rep.warnings:
                err.print(f"[yellow]warning:[/yellow] {w}")
        summary = pipe.finish()
    readable = [Path(f.path) for f in summary.files if f.error is None]
    if not readable:
        err.print("[red]error:[/red] no capture could be read; no model written")
        sys.exit(EXIT_NO_INPUT)
    for det in detectors:
        note = finish_learning(det)
        if note:
            err.print(f"[yellow]note:[/yellow] {note}")
    learnt = Learnt(
        inputs=[input_record(p) for p in readable],
        first_ns=summary.first_ns,
        last_ns=summary.last_ns,
        packets=summary.packets,
        flows=summary.flows,
        alerts=len(summary.alerts),
    )
    try:
        manifest = save_model(out, detectors, config, learnt)
    except (OSError, ModelError) as exc:
        err.print(f"[red]error:[/red] {out}: cannot write the model: {exc}")
        sys.exit(EXIT_MODEL)
    if as_json:
        click.echo(json.dumps(manifest, indent=1, sort_keys=True))
        return
    con = Console(highlight=False)
    span = manifest["data_span"]
    con.print(
        f"[bold]Model[/bold] {out}: learnt from {len(readable)} capture(s), "
        f"{summary.packets:,} packets, {summary.flows:,} flows, "
        f"{span['duration_s']:,.1f} s of data ({span['first']} → {span['last']})"
    )
    t = Table("detector", "state version", "learnt rows", "files")
    for name, e in manifest["detectors"].items():
        files = [e["file"]] + ([e["arrays"]] if e["arrays"] else [])
        size = sum(manifest["files"][f]["bytes"] for f in files)
        learnt_rows = "" if e["learnt"] is None else f"{e['learnt']:,}"
        t.add_row(name, str(e["state_version"]), learnt_rows, f"{', '.join(files)} ({size:,} B)")
    con.print(t)
    if summary.alerts:
        con.print(
            f"[yellow]{len(summary.alerts)} alert(s) while learning[/yellow]: what raised them "
            "was not learnt; check the input really is normal (`tapetum analyze` on it)."
        )
