"""`tapetum dga`: score DNS names with the bundled DGA model.

    tapetum dga qxvbzkwl.com www.example.org
    tapetum dga --file names.txt --json
    zcat dns.log.gz | cut -f10 | tapetum dga --file -

One name per line in files; blank lines and lines starting with "#" are skipped. A malformed name
(label over 63 characters, name over 253, characters outside letters, digits, "-", "_", invalid
punycode) is reported with file:line on standard error and skipped.

Exit codes: 0 done (even if some names were skipped); 2 usage error; 3 a file could not be read
or no name was given.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tapetum.errors import ModelError
from tapetum.features.dga import MALFORMED, OK, Prepared, load_model, prepare

EXIT_INPUT = 3


def _verdict(p: Prepared, score: float, threshold: float) -> str:
    if p.status != OK:
        return f"not scored ({p.reason})"
    return "dga" if score >= threshold else "benign"


@click.command()
@click.argument("names", nargs=-1)
@click.option(
    "--file", "files", multiple=True, type=click.Path(dir_okay=False, allow_dash=True),
    help="Read names from this file, one per line ('-' for standard input). Repeatable.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object per name (JSON lines).")
@click.option(
    "--threshold", type=click.FloatRange(0.0, 1.0), default=None,
    help="Score at which a name is called DGA (default: the model's shipped threshold).",
)  # fmt: skip
def dga(
    names: tuple[str, ...], files: tuple[str, ...], as_json: bool, threshold: float | None
) -> None:
    """Score DNS names: how likely their registered domain was made by a DGA."""
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    items: list[tuple[str, str]] = [(n, f"argument {k + 1}") for k, n in enumerate(names)]
    failed = False
    for f in files:
        try:
            if f == "-":
                text = sys.stdin.read()
            else:
                text = Path(f).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            err.print(f"[red]error:[/red] {f}: cannot read: {exc.strerror or exc}")
            failed = True
            continue
        where = "<stdin>" if f == "-" else f
        for lineno, line in enumerate(text.splitlines(), 1):
            s = line.strip()
            if s and not s.startswith("#"):
                items.append((s, f"{where}:{lineno}"))
    if not items:
        if not failed:
            err.print("[red]error:[/red] no names given (arguments or --file)")
        sys.exit(EXIT_INPUT)
    try:
        model = load_model()
    except ModelError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_INPUT)
    bar = model.threshold if threshold is None else threshold
    prepared: list[tuple[str, Prepared]] = []
    for name, where in items:
        p = prepare(name)
        if p.status == MALFORMED:
            err.print(f"[yellow]warning:[/yellow] {where}: skipped {name[:80]!r}: {p.reason}")
            continue
        prepared.append((name, p))
    ok = [p.label for _, p in prepared if p.status == OK]
    scores = iter(model.score_labels(ok).tolist())
    rows = [(n, p, next(scores) if p.status == OK else math.nan) for n, p in prepared]
    if as_json:
        out = sys.stdout
        for name, p, s in rows:
            rec = {
                "name": name,
                "registered_domain": p.registered or None,
                "label": p.label or None,
                "score": None if math.isnan(s) else round(s, 6),
                "verdict": "dga" if p.status == OK and s >= bar else
                           "benign" if p.status == OK else "not_scored",
                "reason": p.reason or None,
                "threshold": round(bar, 6),
            }  # fmt: skip
            out.write(json.dumps(rec) + "\n")
    else:
        table = Table(title=f"DGA scores (threshold {bar:.3f})")
        for col in ("name", "registered domain", "score", "verdict"):
            table.add_column(col, justify="right" if col == "score" else "left")
        for name, p, s in rows:
            verdict = _verdict(p, s, bar)
            style = "bold red" if verdict == "dga" else None
            score_text = "-" if math.isnan(s) else f"{s:.3f}"
            table.add_row(name, p.registered or "-", score_text, verdict, style=style)
        Console(soft_wrap=True, highlight=False).print(table)
    if failed:
        sys.exit(EXIT_INPUT)
