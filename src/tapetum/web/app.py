"""`tapetum serve`: the REST API and the dashboard over one DuckDB store.

Design:
- Every `/api/*` route, `/metrics` and `/openapi.json` need a bearer token (`tapetum token
  create`); only `/api/health` does not. The HTML pages and static files carry no data (they are
  shells filled by the browser from the API with the token kept in sessionStorage), so they are
  served without one. FastAPI's Swagger/ReDoc pages are off: they load scripts from a CDN.
- The store is opened per request and closed after it (under one lock), so `tapetum analyze`
  can write to it between requests; a store busy in another process answers 503.
- All SQL lives in `tapetum.store` with `?` parameters and whitelisted sort columns.
- Bodies over `max_body_bytes` get 413 before they are parsed; malformed JSON gets 422.
"""

# No `from __future__ import annotations`: FastAPI resolves the routes' annotations at run time,
# and several refer to names local to create_app.
import importlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import duckdb
import msgspec
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field

from tapetum import __version__
from tapetum.config import Config
from tapetum.errors import StoreError, TapetumError
from tapetum.records import Incident
from tapetum.sinks.duckdb import connect
from tapetum.store import incidents as store_incidents
from tapetum.store import search as store_search
from tapetum.web import tokens

#: Largest request body accepted, bytes (a verdict note is the biggest thing a client sends).
MAX_BODY_BYTES = 64 * 1024
#: Longest value of a text filter, characters.
MAX_FILTER_CHARS = 256

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """413 for bodies over the limit: at once from Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, send: Send) -> None:
        body = b'{"detail":"request body too large (limit %d bytes)"}' % self.limit
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())],
            }
        )  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await self._refuse(send)
                    return
        seen = 0
        started = False
        refused = False

        async def limited() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    # Answer 413 here and tell the app the client went away: an exception
                    # raised into the app would be turned into a 400 by its body parser.
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return msg

        async def tracking(msg: Message) -> None:
            nonlocal started
            if refused:
                return
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        await self.app(scope, limited, tracking)


class StoreAccess:
    """Opens the store for one request at a time (DuckDB allows one writing process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    @contextmanager
    def open(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.lock:
            try:
                con = connect(self.path)
            except StoreError as exc:
                raise HTTPException(503, f"store unavailable: {exc}") from None
            try:
                yield con
            finally:
                con.close()


class VerdictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verdict: Literal["tp", "benign", "fp"]
    note: str = Field("", max_length=2000)
    analyst: str = Field("api", max_length=100)
    #: Create a scoped suppression (entity, detector, destination) with the verdict.
    suppress: bool = False
    #: Days until the suppression expires (None: the feedback module's default).
    suppress_days: float | None = Field(None, gt=0, le=3650)


Text = Annotated[str | None, Query(max_length=MAX_FILTER_CHARS)]
Limit = Annotated[int, Query(ge=1, le=store_incidents.MAX_LIMIT)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Order = Annotated[Literal["asc", "desc"], Query()]
Port = Annotated[int | None, Query(ge=0, le=65535)]
Id = Annotated[str, PathParam(max_length=MAX_FILTER_CHARS)]
# Sort columns as Literals so OpenAPI lists them and anything else is a 422 (kept equal to the
# whitelists in tapetum.store, which refuse anything else again).
IncidentSort = Literal["ts", "first_seen", "last_seen", "severity", "confidence", "alert_count",
                       "entity"]  # fmt: skip
FlowSort = Literal["start", "end", "duration_s", "bytes", "bytes_toserver", "bytes_toclient",
                   "pkts"]  # fmt: skip
DnsSort = Literal["ts", "query", "rtt_ms"]
TlsSort = Literal["ts", "sni"]
_BEARER = HTTPBearer(auto_error=False)


def _times(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    try:
        return store_incidents.parse_time(since), store_incidents.parse_time(until)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def _optional(module: str, name: str) -> Any:
    """A function of a module another part of Tapetum provides; 501 while it is missing."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise HTTPException(501, f"{module} is not available in this installation") from None
    fn = getattr(mod, name, None)
    if fn is None:
        raise HTTPException(501, f"{module}.{name} is not available in this installation")
    return fn


def _incident_record(row: dict[str, Any]) -> Incident:
    def ns(v: str | None) -> int:
        return store_incidents.parse_time(v) or 0

    return Incident(
        incident_id=row["incident_id"],
        ts_ns=ns(row["ts"]),
        first_ts_ns=ns(row["first_seen"]),
        last_ts_ns=ns(row["last_seen"]),
        entity=row["entity"],
        title=row["title"] or "",
        summary=row["summary"] or "",
        severity=int(row["severity"]),
        confidence=float(row["confidence"] or 0.0),
        alert_count=int(row["alert_count"] or 0),
        alert_ids=tuple(row["alert_ids"] or ()),
        signatures=tuple(row["signatures"] or ()),
        categories=tuple(row["categories"] or ()),
        mitre_technique_id=tuple(row["mitre_technique_id"] or ()),
        mitre_tactic=tuple(row["mitre_tactic"] or ()),
        stage=row["stage"] or "unknown",
        src_ip=row["src_ip"],
        dest_ips=tuple(row["dest_ips"] or ()),
        users=tuple(row.get("users") or ()),
    )


def _responses(
    con: duckdb.DuckDBPyConnection, inc: dict[str, Any], config: Config
) -> dict[str, Any]:
    """The actions on record for this incident, then what the playbooks would plan for it that
    is not on record yet (in dry-run wording: "would have blocked ...")."""
    out: dict[str, Any] = {"planned": [], "recorded": [], "available": True}
    try:
        from tapetum.response import describe, list_actions, plan, would
    except ImportError:
        out["available"] = False
        return out
    recorded = list_actions(con, incident_id=inc["incident_id"])
    seen = {a.action_id for a in recorded}
    for group, actions in (
        ("recorded", recorded),
        ("planned", [a for a in plan(_incident_record(inc), config) if a.action_id not in seen]),
    ):
        for a in actions:
            d = msgspec.to_builtins(a)
            d["description"] = (
                would(a) if a.mode == "dry-run" and a.state != "refused" else describe(a)
            )
            out[group].append(d)
    return out


def create_app(
    store: str | Path, config: Config | None = None, *, max_body_bytes: int = MAX_BODY_BYTES
) -> FastAPI:
    cfg = config or Config()
    access = StoreAccess(Path(store))
    app = FastAPI(
        title="Tapetum",
        version=__version__,
        description="Incidents, evidence, verdicts, risk and response of a Tapetum store. "
        "Authenticate with `Authorization: Bearer <token>` (`tapetum token create`).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def require_token(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> str:
        if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if len(creds.credentials) > 200:
            raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
        with access.open() as con:
            token_id = tokens.check_token(con, creds.credentials)
        if token_id is None:
            raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
        return token_id

    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

    @app.exception_handler(TapetumError)
    async def tapetum_error(request: Request, exc: TapetumError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.get("/api/health", tags=["meta"])
    def health() -> dict[str, Any]:
        """Liveness (no token needed): the version and whether the store opens."""
        try:
            with access.open():
                ok = True
        except HTTPException:
            ok = False
        return {"status": "ok" if ok else "store-unavailable", "version": __version__}

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_token)])
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @api.get("/incidents", tags=["incidents"])
    def incidents(
        severity: Annotated[int | None, Query(ge=1, le=3)] = None,
        stage: Text = None,
        entity: Text = None,
        since: Text = None,
        until: Text = None,
        q: Text = None,
        run_id: Text = None,
        sort: IncidentSort = "ts",
        order: Order = "desc",
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """Incidents matching every filter (q: text in title, summary, entity, signatures,
        techniques; since/until: ns since the epoch or ISO 8601), newest first, one page."""
        since_ns, until_ns = _times(since, until)
        with access.open() as con:
            return store_incidents.list_incidents(
                con, severity=severity, stage=stage, entity=entity, since_ns=since_ns,
                until_ns=until_ns, q=q, run_id=run_id, sort=sort, order=order, limit=limit,
                offset=offset,
            )  # fmt: skip

    @api.get("/incidents/{incident_id}", tags=["incidents"])
    def incident(incident_id: Id) -> dict[str, Any]:
        """One incident: its alerts (timeline), evidence (the alerts' flows by flow_id and
        community_id, then the entity's flows, DNS and TLS records in the incident's span),
        verdicts and the response actions planned or on record."""
        with access.open() as con:
            inc = store_incidents.get_incident(con, incident_id)
            if inc is None:
                raise HTTPException(404, f"no incident {incident_id!r}")
            inc["verdicts"] = []
            if store_incidents.has_table(con, "verdicts"):
                inc["verdicts"] = store_incidents.rows_as_dicts(
                    con.execute(
                        "SELECT * FROM verdicts WHERE incident_id = ? ORDER BY ts_ns",
                        [incident_id],
                    )
                )
            inc["response"] = _responses(con, inc, cfg)
        return inc

    @api.post("/incidents/{incident_id}/verdict", tags=["incidents"])
    def verdict(incident_id: Id, body: VerdictIn) -> dict[str, Any]:
        """Record a verdict (tp, benign, fp), optionally with a scoped suppression."""
        record_verdict = _optional("tapetum.alerts.feedback", "record_verdict")
        from tapetum.errors import NotFound

        suppress: bool | dict[str, Any] = body.suppress
        if body.suppress and body.suppress_days is not None:
            suppress = {"days": body.suppress_days}
        with access.open() as con:
            try:
                v = record_verdict(
                    con, incident_id, body.verdict, note=body.note, analyst=body.analyst,
                    suppress=suppress,
                )  # fmt: skip
            except NotFound as exc:
                raise HTTPException(404, str(exc)) from None
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None
        result: dict[str, Any] = msgspec.to_builtins(v)
        return result

    @api.get("/entities/{entity}/risk", tags=["entities"])
    def entity_risk(entity: Id) -> dict[str, Any]:
        """Risk of one entity for a zero-trust policy engine: score 0..100, level, reasons."""
        risk_report = _optional("tapetum.alerts.risk", "risk_report")
        with access.open() as con:
            report = risk_report(con, entity)
        result: dict[str, Any] = msgspec.to_builtins(report)
        return result

    @api.get("/entities/{entity}", tags=["entities"])
    def entity_detail(entity: Id) -> dict[str, Any]:
        """An entity's incidents, alerts (observed vs baseline), traffic totals and users."""
        with access.open() as con:
            return store_incidents.entity_summary(con, entity)

    @api.get("/flows", tags=["search"])
    def flows(
        ip: Text = None,
        src_ip: Text = None,
        dest_ip: Text = None,
        port: Port = None,
        proto: Text = None,
        service: Text = None,
        conn_state: Text = None,
        flow_id: int | None = None,
        community_id: Text = None,
        since: Text = None,
        until: Text = None,
        sort: FlowSort = "start",
        order: Order = "desc",
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """Flows matching every filter (ip: either end; port: either end)."""
        since_ns, until_ns = _times(since, until)
        with access.open() as con:
            return store_search.search_flows(
                con, ip=ip, src_ip=src_ip, dest_ip=dest_ip, port=port, proto=proto,
                service=service, conn_state=conn_state, flow_id=flow_id,
                community_id=community_id, since_ns=since_ns, until_ns=until_ns, sort=sort,
                order=order, limit=limit, offset=offset,
            )  # fmt: skip

    @api.get("/dns", tags=["search"])
    def dns(
        query: Text = None,
        qtype: Text = None,
        rcode: Text = None,
        ip: Text = None,
        src_ip: Text = None,
        dest_ip: Text = None,
        port: Port = None,
        flow_id: int | None = None,
        community_id: Text = None,
        since: Text = None,
        until: Text = None,
        sort: DnsSort = "ts",
        order: Order = "desc",
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """DNS records (query: substring of the name)."""
        since_ns, until_ns = _times(since, until)
        with access.open() as con:
            return store_search.search_dns(
                con, query=query, qtype=qtype, rcode=rcode, ip=ip, src_ip=src_ip,
                dest_ip=dest_ip, port=port, flow_id=flow_id, community_id=community_id,
                since_ns=since_ns, until_ns=until_ns, sort=sort, order=order, limit=limit,
                offset=offset,
            )  # fmt: skip

    @api.get("/tls", tags=["search"])
    def tls(
        sni: Text = None,
        ja3: Text = None,
        ja4: Text = None,
        subject: Text = None,
        self_signed: bool | None = None,
        ip: Text = None,
        src_ip: Text = None,
        dest_ip: Text = None,
        port: Port = None,
        flow_id: int | None = None,
        community_id: Text = None,
        since: Text = None,
        until: Text = None,
        sort: TlsSort = "ts",
        order: Order = "desc",
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """TLS handshakes (sni, subject: substrings)."""
        since_ns, until_ns = _times(since, until)
        with access.open() as con:
            return store_search.search_tls(
                con, sni=sni, ja3=ja3, ja4=ja4, subject=subject, self_signed=self_signed,
                ip=ip, src_ip=src_ip, dest_ip=dest_ip, port=port, flow_id=flow_id,
                community_id=community_id, since_ns=since_ns, until_ns=until_ns, sort=sort,
                order=order, limit=limit, offset=offset,
            )  # fmt: skip

    @api.get("/detectors", tags=["detectors"])
    def detectors() -> dict[str, Any]:
        """Registered detectors: enabled by default or not, their configuration and the
        alerts each raised in the store."""
        from tapetum.registry import DETECTORS, enabled_by_default

        with access.open() as con:
            counts = {
                str(name): (int(n), last)
                for name, n, last in con.execute(
                    "SELECT split_part(signature, '.', 1) AS d, count(*), max(ts) FROM alerts "
                    "GROUP BY d"
                ).fetchall()
            }
        out = []
        for name in DETECTORS:
            n, last = counts.get(name, (0, None))
            section = getattr(cfg.detectors, name, None)
            out.append(
                {
                    "name": name,
                    "enabled": enabled_by_default(cfg, name),
                    "config": msgspec.to_builtins(section) if section is not None else {},
                    "alerts": n,
                    "last_alert": store_incidents._plain("ts", last),
                }
            )
        return {"detectors": out}

    @api.get("/stats/timeline", tags=["stats"])
    def stats_timeline(
        since: Text = None,
        until: Text = None,
        buckets: Annotated[int, Query(ge=1, le=1000)] = 60,
    ) -> dict[str, Any]:
        """Flows, bytes and alerts per time bucket (data time, not wall clock)."""
        since_ns, until_ns = _times(since, until)
        with access.open() as con:
            return store_incidents.timeline(
                con, since_ns=since_ns, until_ns=until_ns, buckets=buckets
            )

    @api.get("/stats/overview", tags=["stats"])
    def stats_overview(top: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        """Incidents by stage and severity, top entities, row counts."""
        with access.open() as con:
            return store_incidents.overview(con, top=top)

    @api.post("/actions/{action_id}/approve", tags=["response"])
    def approve_action(action_id: Id) -> dict[str, Any]:
        """Approve a response action waiting for an analyst (mode "approve"): it is applied
        now and its TTL starts. 404 for an unknown action, 409 if it is not waiting."""
        return _act(_optional("tapetum.response", "approve"), action_id)

    @api.post("/actions/{action_id}/revert", tags=["response"])
    def revert_action(action_id: Id) -> dict[str, Any]:
        """Revert an applied action now (before its TTL) or withdraw a queued one."""
        return _act(_optional("tapetum.response", "revert_stored"), action_id)

    def _act(fn: Callable[..., Any], action_id: str) -> dict[str, Any]:
        from tapetum.response import NotFound as ActionNotFound
        from tapetum.response import ResponseError

        with access.open() as con:
            try:
                action, detail = fn(con, action_id, cfg, analyst="api")
            except ActionNotFound as exc:
                raise HTTPException(404, str(exc)) from None
            except ResponseError as exc:
                raise HTTPException(409, str(exc)) from None
        result: dict[str, Any] = msgspec.to_builtins(action)
        result["detail"] = detail
        return result

    app.include_router(api)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["meta"],
        dependencies=[Depends(require_token)],
    )
    def metrics() -> str:
        """Prometheus text exposition of the store's counts."""
        with access.open() as con:
            ov = store_incidents.overview(con)
        try:
            render = importlib.import_module("tapetum.metrics").render
        except (ImportError, AttributeError):
            render = None
        counters = {f"{k}_total": v for k, v in ov["totals"].items()}
        if render is not None:
            return str(render(counters))
        lines = []
        for name, value in sorted(counters.items()):
            lines.append(f"# TYPE tapetum_{name} counter")
            lines.append(f"tapetum_{name} {value}")
        return "\n".join(lines) + "\n"

    _pages(app)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app


def _pages(app: FastAPI) -> None:
    base = Path(str(resources.files("tapetum.web")))
    env = Environment(
        loader=FileSystemLoader(str(base / "templates")),
        autoescape=select_autoescape(["html"]),
    )
    app.mount("/static", StaticFiles(directory=str(base / "static")), name="static")
    started = str(time.time_ns())

    def page(name: str, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(version=__version__, cache=started, **ctx)
        return HTMLResponse(
            html,
            headers={
                # Scripts and styles from this server only; no inline script.
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview_page() -> HTMLResponse:
        return page("overview.html", title="Overview", page="overview")

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page() -> HTMLResponse:
        return page("login.html", title="Log in", page="login")

    @app.get("/incidents", response_class=HTMLResponse, include_in_schema=False)
    def incidents_page() -> HTMLResponse:
        return page("incidents.html", title="Incidents", page="incidents")

    @app.get("/incidents/{incident_id}", response_class=HTMLResponse, include_in_schema=False)
    def incident_page(incident_id: Id) -> HTMLResponse:
        return page("incident.html", title="Incident", page="incident", ident=incident_id)

    @app.get("/entities/{entity}", response_class=HTMLResponse, include_in_schema=False)
    def entity_page(entity: Id) -> HTMLResponse:
        return page("entity.html", title="Entity", page="entity", ident=entity)

    @app.get("/search", response_class=HTMLResponse, include_in_schema=False)
    def search_page() -> HTMLResponse:
        return page("search.html", title="Search", page="search")

    @app.get("/detectors", response_class=HTMLResponse, include_in_schema=False)
    def detectors_page() -> HTMLResponse:
        return page("detectors.html", title="Detectors", page="detectors")
