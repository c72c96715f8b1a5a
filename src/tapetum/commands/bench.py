"""`tapetum bench detectors`: the researchers' bench for the anomaly models.

Every registered anomaly model (`tapetum.anomaly.ANOMALY_MODELS`) learns from the benign rows of
TRAIN and is scored on TEST: ROC-AUC, PR-AUC, recall at 1% FPR and rows/s, overall and per label
value. Any numeric flow-feature CSV works (CICFlowMeter style included); identifier columns are
excluded (see `tapetum.anomaly.table`).

Exit codes: 0 done; 2 usage error; 3 an input could not be read.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

EXIT_INPUT = 3


@click.group()
def bench() -> None:
    """Benchmarks for researchers."""


@bench.command()
@click.option(
    "--train", "train", multiple=True, required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Training CSV file(s) or directory; only the benign rows are learnt.",
)  # fmt: skip
@click.option(
    "--test", "test", multiple=True, required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Test CSV file(s) or directories (every *.csv inside).",
)  # fmt: skip
@click.option("--label-column", required=True, help="Column holding the class label.")
@click.option("--benign-label", default="BENIGN", show_default=True, help="Label of benign rows.")
@click.option(
    "--model", "models", multiple=True,
    help="Only these anomaly models (default: every registered one).",
)  # fmt: skip
@click.option("--seed", default=0, show_default=True, help="Seed of every model.")
@click.option(
    "--target-fpr", default=0.01, show_default=True,
    help="False-alarm rate the thresholds are calibrated to (on held-out benign TRAIN rows).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.option("--no-progress", is_flag=True, help="Do not show a progress bar.")
def detectors(
    train: tuple[Path, ...],
    test: tuple[Path, ...],
    label_column: str,
    benign_label: str,
    models: tuple[str, ...],
    seed: int,
    target_fpr: float,
    as_json: bool,
    no_progress: bool,
) -> None:
    """Train every anomaly model on the benign rows of TRAIN; evaluate on TEST."""
    from tapetum.anomaly import ANOMALY_MODELS
    from tapetum.anomaly.evaluate import evaluate
    from tapetum.anomaly.table import read_table

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    unknown = [m for m in models if m not in ANOMALY_MODELS]
    if unknown:
        raise click.UsageError(
            f"unknown model(s) {', '.join(unknown)}; known: {', '.join(ANOMALY_MODELS)}"
        )
    chosen = list(models) or list(ANOMALY_MODELS)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        disable=no_progress or not err.is_terminal,
    )
    with progress:
        task = progress.add_task("reading", total=2 + 2 * len(chosen))
        try:
            tr = read_table(train, label_column)
            progress.advance(task)
            te = read_table(test, label_column, features=tr.names)
            progress.advance(task)
        except ValueError as exc:
            progress.stop()
            err.print(f"[red]error:[/red] {exc}")
            sys.exit(EXIT_INPUT)

        def step(name: str, what: str) -> None:
            progress.update(task, description=f"{name}: {what}")
            progress.advance(task)

        try:
            result = evaluate(
                tr, te, benign_label, models=chosen, seed=seed, target_fpr=target_fpr,
                progress=step,
            )  # fmt: skip
        except ValueError as exc:
            progress.stop()
            err.print(f"[red]error:[/red] {exc}")
            sys.exit(EXIT_INPUT)
    result["train_files"] = sorted(set(tr.files))
    result["test_files"] = sorted(set(te.files))
    for w in result["warnings"]:
        err.print(f"[yellow]warning:[/yellow] {w}")
    if as_json:
        click.echo(json.dumps(_json_safe(result), indent=1))
    else:
        _print(Console(), result)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def _f(x: float, digits: int = 3) -> str:
    return "—" if not math.isfinite(x) else f"{x:.{digits}f}"


def _print(con: Console, r: dict[str, Any]) -> None:
    con.print(
        f"[bold]Train[/bold] {r['train_benign_rows']:,} benign of {r['train_rows']:,} rows; "
        f"[bold]test[/bold] {r['test_rows']:,} rows ({r['test_benign_rows']:,} benign); "
        f"{len(r['features'])} features"
    )
    ex = ", ".join(f"{k} ({v})" for k, v in r["excluded_columns"].items())
    con.print(f"[dim]Excluded columns: {ex}[/dim]")
    for name, m in r["models"].items():
        t = Table(
            "label", "rows", "ROC-AUC", "PR-AUC", "recall@1%FPR", "recall@thr",
            title=(
                f"{name}: mean ROC-AUC over classes {_f(m['mean_roc_auc'])}; train "
                f"{m['train_rows_per_s']:,.0f} rows/s, score {m['score_rows_per_s']:,.0f} rows/s; "
                f"FPR at the calibrated threshold {_f(m['overall']['fpr_at_threshold'])}"
            ),
            title_justify="left",
        )  # fmt: skip
        rows = [("all attacks", r["test_rows"] - r["test_benign_rows"], m["overall"])]
        rows += [(c, v["rows"], v) for c, v in m["per_label"].items()]
        for label, n, v in rows:
            t.add_row(
                label, f"{n:,}", _f(v["roc_auc"]), _f(v["pr_auc"]),
                _f(v["recall_at_1pct_fpr"]), _f(v["recall_at_threshold"]),
            )  # fmt: skip
        con.print(t)
