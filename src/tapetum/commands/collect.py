"""`tapetum collect`: a NetFlow v5/v9/IPFIX collector feeding the full pipeline.

`--listen HOST:PORT` receives export datagrams over UDP (IPv4 or IPv6; `[::]:2055` takes both);
`--read FILE` decodes a capture (pcap/pcapng) of export traffic instead, for forensics and tests.
Flows decoded from the datagrams of the last 250 ms (at most) go through the pipeline
(`Pipeline.process_records`), so alerts come out as the exporters report; the output goes to the
DuckDB store, JSON lines and the console as with `analyze`. SIGINT/SIGTERM stop the collector
cleanly: the last datagrams are decoded and everything is flushed. See docs/netflow.md.

Exit codes as `analyze`: 0 success; 2 usage error (a bad --listen address); 3 the socket cannot
be opened or the capture not read; 4 store error; 5 config error.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import select
import socket
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from tapetum.cli import EXIT_NO_INPUT, output_options
from tapetum.commands._common import (
    StopSignals,
    close_sinks,
    load_config_or_exit,
    open_sinks_or_exit,
    print_result,
)

#: Decoded flows go down the pipeline at least this often (live mode's batch interval).
FLUSH_S = 0.25
#: Datagrams read in one go before the flush timer is looked at again.
MAX_DRAIN = 2048
RCVBUF_BYTES = 8 << 20


def parse_listen(text: str) -> tuple[socket.AddressFamily, str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `PORT` -> (family, host, port). ValueError if bad."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "0.0.0.0", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)  # raises on a bad host
    return family, host, port


def open_socket(listen: str) -> socket.socket:
    """A bound, non-blocking UDP socket with a large receive buffer (bursts of exports)."""
    family, host, port = parse_listen(listen)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
        with_rcvbuf(sock)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def with_rcvbuf(sock: socket.socket) -> None:
    # Beyond the kernel's limit the setting is capped; drops are counted when readable.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)


def os_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped on this socket (Linux /proc/net/udp 'drops'), or None."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except OSError:
        return None
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 13 and parts[9] == inode:
                        return int(parts[12])
        except (OSError, ValueError):
            continue
    return None


def exporter_name(addr: Any) -> str:
    """An exporter's address as text; IPv4 arriving on a dual-stack socket loses its ::ffff:."""
    host = str(addr[0])
    return host[7:] if host.startswith("::ffff:") and "." in host else host


@click.command("collect")
@click.option(
    "--listen",
    help="Receive NetFlow v5/v9/IPFIX on this UDP HOST:PORT (e.g. 0.0.0.0:2055, [::]:4739).",
)
@click.option(
    "--read",
    "read_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Decode a capture (pcap/pcapng) of NetFlow/IPFIX export traffic instead.",
)
@click.option(
    "--port",
    "ports",
    type=int,
    multiple=True,
    help="With --read: only UDP datagrams to this port (repeatable; default any).",
)
@output_options("DuckDB file to store flows, alerts and incidents in.")
@click.option("--max-seconds", type=float, help="Stop after this many seconds (wall clock).")
@click.option("--max-flows", type=int, help="Stop once this many flows were collected.")
@click.option(
    "--no-pairing",
    is_flag=True,
    help="Keep every NetFlow record a one-direction flow (no biflow pairing).",
)
def collect(
    listen: str | None,
    read_path: Path | None,
    ports: tuple[int, ...],
    store: Path,
    no_store: bool,
    jsonl_path: Path | None,
    as_json: bool,
    config_path: Path | None,
    max_seconds: float | None,
    max_flows: int | None,
    no_pairing: bool,
) -> None:
    """Collect NetFlow v5, v9 and IPFIX flows (UDP or a capture) and analyse them."""
    from tapetum.errors import InputError
    from tapetum.pipeline import FileReport, Pipeline, run_id_for
    from tapetum.sources.netflow import NetflowCaptureSource, NetflowCollector

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    if (listen is None) == (read_path is None):
        raise click.UsageError("give exactly one of --listen HOST:PORT or --read CAPTURE")
    config = load_config_or_exit(config_path, err)
    sock: socket.socket | None = None
    if listen is not None:
        try:
            sock = open_socket(listen)
        except ValueError as exc:
            raise click.UsageError(f"--listen {listen}: {exc}") from None
        except OSError as exc:
            err.print(f"[red]error:[/red] cannot listen on {listen}: {exc.strerror or exc}")
            sys.exit(EXIT_NO_INPUT)
        bound = sock.getsockname()
        label = f"udp://{listen.rpartition(':')[0] or '0.0.0.0'}:{bound[1]}"
        run_id = hashlib.sha1(f"collect|{label}|{time.time_ns()}".encode()).hexdigest()[:16]
    else:
        assert read_path is not None
        label = str(read_path)
        run_id = run_id_for([label], config)
    sinks, db = open_sinks_or_exit(
        err, config, store, no_store=no_store, jsonl_path=jsonl_path, run_id=run_id, inputs=[label]
    )

    pipe = Pipeline(config, sinks)
    rep = FileReport(path=label, format="netflow")
    pipe.summary.files.append(rep)
    seed = config.meter.community_id_seed
    shown_alerts = 0
    shown_warnings = 0

    def report_progress(collector: NetflowCollector) -> None:
        """New alerts and input warnings on the console as they happen."""
        nonlocal shown_alerts, shown_warnings
        if as_json:
            return
        for a in pipe.summary.alerts[shown_alerts:]:
            err.print(f"[bold red]alert[/bold red] {escape(a.explanation)}")
        shown_alerts = len(pipe.summary.alerts)
        for w in collector.warnings[shown_warnings:]:
            err.print(f"[yellow]warning:[/yellow] {escape(str(w))}")
        shown_warnings = len(collector.warnings)

    with StopSignals() as stop:
        if sock is not None:
            collector = NetflowCollector(label, pair_biflows=not no_pairing, community_id_seed=seed)
            err.print(f"listening on {label} (NetFlow v5/v9, IPFIX)")
            drops = _listen(sock, collector, pipe, stop, max_seconds, max_flows, report_progress)
            sock.close()
            rep.packets = collector.counters.datagrams
            rep.counters = collector.counters.as_dict()
            if drops is not None:
                rep.counters["os_dropped_datagrams"] = drops
        else:
            assert read_path is not None
            try:
                src = NetflowCaptureSource(
                    label,
                    ports=set(ports) or None,
                    pair_biflows=not no_pairing,
                    community_id_seed=seed,
                )
            except InputError as exc:
                rep.error = str(exc)
            else:
                collector = src.collector
                try:
                    for rb in src:
                        pipe.process_records(rb)
                        report_progress(collector)
                        if stop.requested or _enough(collector, max_flows):
                            break
                except InputError as exc:
                    rep.error = str(exc)
                finally:
                    src.close()
                rep.format = src.format or "netflow"
                rep.packets = collector.counters.datagrams
                rep.counters = {**collector.counters.as_dict(), "not_udp": src.skipped_packets}
                rep.warnings = [str(w) for w in src.warnings]
        if rep.error is None and sock is not None:
            rep.warnings = [str(w) for w in collector.warnings]
            rep.counters["exporters"] = len(collector.templates_by_exporter())
        summary = pipe.finish()
        if rep.error is None:
            report_progress(collector)
    close_sinks(sinks, db, summary, err)
    if rep.error and not as_json:
        err.print(f"[red]error:[/red] {rep.error}")
    print_result(summary, as_json=as_json, store=None if no_store else store)
    if rep.error is None and not as_json:
        _print_netflow(Console(), rep.counters, collector.templates_by_exporter())
    if rep.error is not None:
        sys.exit(EXIT_NO_INPUT)


def _enough(collector: Any, max_flows: int | None) -> bool:
    return max_flows is not None and collector.counters.flows >= max_flows


def _listen(
    sock: socket.socket,
    collector: Any,
    pipe: Any,
    stop: StopSignals,
    max_seconds: float | None,
    max_flows: int | None,
    on_flush: Any,
) -> int | None:
    """The receive loop: datagrams are decoded as they come; flows go down the pipeline every
    FLUSH_S. Stops on a signal, --max-seconds or --max-flows, after a last drain and flush.
    Returns the kernel's drop count for the socket when readable."""
    from tapetum.sources.base import RecordBatch

    start = time.monotonic()
    last_flush = start
    since_flush = 0

    def drain() -> int:
        got = 0
        while got < MAX_DRAIN:
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.ECONNREFUSED):
                    continue
                raise
            collector.feed(data, exporter_name(addr))
            got += 1
        return got

    def flush() -> None:
        nonlocal since_flush
        fb = collector.take()
        if fb is not None or since_flush:
            pipe.process_records(RecordBatch(flows=fb, records=since_flush))
        since_flush = 0
        on_flush(collector)

    while not stop.requested:
        now = time.monotonic()
        if max_seconds is not None and now - start >= max_seconds:
            break
        wait = max(0.0, last_flush + FLUSH_S - now)
        try:
            ready, _, _ = select.select([sock], [], [], wait)
        except InterruptedError:
            ready = []
        if ready:
            since_flush += drain()
        if time.monotonic() - last_flush >= FLUSH_S:
            flush()
            last_flush = time.monotonic()
            if _enough(collector, max_flows):
                break
    since_flush += drain()  # what arrived before the stop
    flush()
    collector.close()
    return os_drops(sock)


def _print_netflow(con: Console, counters: dict[str, int], templates: dict[str, int]) -> None:
    c = counters
    con.print(
        f"[bold]NetFlow[/bold]: {c.get('datagrams', 0):,} datagrams, "
        f"{c.get('records', 0):,} records -> {c.get('flows', 0):,} flows "
        f"({c.get('biflows_paired', 0):,} paired biflows); malformed {c.get('malformed', 0):,}; "
        f"waiting for templates {c.get('pending_never_decoded', 0):,} sets"
    )
    if templates:
        con.print(
            "[bold]Templates[/bold] per exporter: "
            + ", ".join(f"{e} {n}" for e, n in sorted(templates.items()))
        )
