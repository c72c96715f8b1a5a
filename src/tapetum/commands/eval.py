"""`tapetum eval`: precision, recall, ROC-AUC, time to detect and false incidents per benign hour
of the whole pipeline on labelled captures (from `tapetum lab`) or on named public datasets."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tapetum.errors import InputError
from tapetum.evaluation.labels import Labels


def _inputs(paths: tuple[Path, ...], labels_path: Path | None) -> list[tuple[Path, Labels]]:
    from tapetum.evaluation.labels import capture_of, load_labels

    items: list[tuple[Path, Labels]] = []
    if labels_path is not None:
        if len(paths) > 1:
            raise click.UsageError("--labels describes one capture: give exactly one CAPTURE")
        labels = load_labels(labels_path)
        cap = paths[0] if paths else capture_of(labels, labels_path)
        return [(cap, labels)]
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.labels.json"))
            if not found:
                raise InputError(str(p), None, "no *.labels.json files in this folder")
            for f in found:
                lab = load_labels(f)
                items.append((capture_of(lab, f), lab))
        elif p.name.endswith(".json"):
            lab = load_labels(p)
            items.append((capture_of(lab, p), lab))
        else:
            # A capture without labels is taken as benign: every incident is a false one.
            items.append((p, Labels(scenario=f"{p.name} (unlabelled: benign)", capture=p.name)))
    return items


def _dga(root: Path) -> dict[str, Any]:
    from tapetum.evaluation.dga import load, split_eval
    from tapetum.features.dga import load_model

    model = load_model()
    result = split_eval(model, load(root / "dga"), int(model.meta["training"]["seed"]))
    result["split_by"] = "domain label (20% of every list held out from training)"
    return result


def _cicids(root: Path) -> dict[str, Any]:
    from tapetum.evaluation.cicids import evaluate_cicids

    return evaluate_cicids(root / "cicids2017")


#: Datasets of labelled rows rather than captures: DGA name lists (the shipped model on the labels
#: its training held out) and CIC-IDS2017 flow features (anomaly models, benign-only training,
#: split by time).
TABLE_DATASETS: dict[str, Callable[[Path], dict[str, Any]]] = {"dga": _dga, "cicids2017": _cicids}


def _print_tables(tables: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"datasets": tables}, indent=1, default=str))
        return
    out = Console(soft_wrap=True, highlight=False)
    if "dga" in tables:
        d = tables["dga"]
        t = Table("family", "held-out labels", "ROC-AUC", "recall at threshold",
                  title=f"DGA model, split by {d['split_by']}")  # fmt: skip
        for fam, v in d["families"].items():
            t.add_row(fam, str(v["test_labels"]), f"{v['roc_auc']:.4f}", f"{v['recall']:.3f}")
        p = d["pooled"]
        t.add_row("pooled", str(p["dga_test_labels"]), f"{p['roc_auc']:.4f}", f"{p['recall']:.3f}")
        out.print(t)
        out.print(f"false-positive rate on held-out benign labels: {p['benign_fpr']:.4f}")
    if "cicids2017" in tables:
        models = tables["cicids2017"]["models"]
        labels = sorted({lab for m in models.values() for lab in m["per_label"]})
        t = Table("attack class", *models,
                  title="CIC-IDS2017 ROC-AUC: benign-only training, split by time")  # fmt: skip
        for lab in labels:
            t.add_row(lab, *(f"{m['per_label'][lab]['roc_auc']:.3f}" for m in models.values()))
        t.add_row("mean", *(f"{m['mean_roc_auc']:.3f}" for m in models.values()))
        out.print(t)


@click.command(name="eval")
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Labels (tapetum-labels/1 JSON) of the one CAPTURE given.",
)
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    help="A named public dataset (slips, zeek, nfstream, dga, cicids2017); repeatable.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the public data (default: $TAPETUM_DATA or ../shared/data).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Tapetum config (TOML) to evaluate with.",
)
@click.option("--tolerance", default=600.0, show_default=True,
              help="Seconds after an attack's end in which its alerts still count.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write a markdown report with plots to this folder.")  # fmt: skip
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--model", "model", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Start every capture from this model (`tapetum learn`), not cold.")  # fmt: skip
def eval_command(
    inputs: tuple[Path, ...],
    labels_path: Path | None,
    datasets: tuple[str, ...],
    data_dir: Path | None,
    config_path: Path | None,
    tolerance: float,
    as_json: bool,
    report_dir: Path | None,
    no_progress: bool,
    model: Path | None = None,
) -> None:
    """Evaluate detection on labelled captures: INPUTS are captures (with --labels, or taken as
    benign), labels files, or folders of `*.labels.json` written by `tapetum lab`.

    Each capture is analysed from scratch (nothing learnt on one is used on another), so no row
    is both trained on and evaluated: detectors learn online from a capture's earlier rows only.
    """
    from tapetum.config import load_config
    from tapetum.evaluation.datasets import data_dir as find_data
    from tapetum.evaluation.datasets import load_dataset
    from tapetum.evaluation.report import (
        CATEGORY_HEADER,
        DETECTOR_HEADER,
        category_rows,
        detector_rows,
        write_report,
    )
    from tapetum.evaluation.runner import evaluate, run_capture
    from tapetum.learning import load_model

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    if not inputs and not datasets:
        raise click.UsageError("give captures, labels files or folders, or --dataset NAME")
    cfg = load_config(config_path)
    items = list(_inputs(inputs, labels_path))
    tables: dict[str, Any] = {}
    for name in datasets:
        if name in TABLE_DATASETS:  # labelled rows, not captures
            tables[name] = TABLE_DATASETS[name](find_data(data_dir))
        else:
            items += load_dataset(name, find_data(data_dir))
    if tables and not items:
        _print_tables(tables, as_json)
        return
    runs = []
    show = not no_progress and not as_json and sys.stderr.isatty()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, disable=not show, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("evaluating", total=len(items))
        for path, labels in items:
            progress.update(task, description=f"evaluating {path.name}")
            # Each capture starts from the model as saved: nothing learnt on one reaches another.
            dets = None if model is None else load_model(model, cfg)[0]
            runs.append(run_capture(path, labels, cfg, name=labels.scenario, detectors=dets))
            progress.advance(task)
    unreadable = [r for r in runs if r.errors and r.packets == 0]
    for r in runs:
        for e in r.errors:
            err.print(f"[yellow]warning:[/yellow] {e}")
    result = evaluate(runs, tolerance)
    if tables:
        result["datasets"] = tables
    if report_dir is not None:
        md = write_report(runs, result, report_dir, "Tapetum detection evaluation")
        err.print(f"report: {md}")
    if as_json:
        click.echo(json.dumps(result, indent=1, default=str))
    else:
        out = Console(soft_wrap=True, highlight=False)
        t = Table(
            *CATEGORY_HEADER, title="Per category (attacks detected with the expected category)"
        )
        for row in category_rows(result):
            t.add_row(*row)
        out.print(t)
        t = Table(*DETECTOR_HEADER, title="Per detector (entity-level scores)")
        for row in detector_rows(result):
            t.add_row(*row)
        out.print(t)
        fph = result["false_incidents_per_benign_hour"]
        out.print(
            f"{len(runs)} captures; false incidents: {result['false_incidents']} over "
            f"{result['benign_hours']:.3f} benign hours"
            + (f" ({fph:.2f} per hour)" if fph is not None else "")
        )
        for c in result["captures"]:
            for a in c["attacks"]:
                if not a["detected"]:
                    other = f" (alerted as {', '.join(a['signatures'])})" if a["signatures"] else ""
                    out.print(f"[red]missed[/red] {c['name']}: {a['id']} ({a['category']}){other}")
            for i in c["false_incidents"]:
                out.print(f"[yellow]false incident[/yellow] {c['name']}: {i['title']}")
        if tables:
            _print_tables(tables, False)
    if runs and len(unreadable) == len(runs):
        sys.exit(3)
