"""Pull a TAXII 2.1 collection's objects (only when `tapetum intel pull` is run).

Plain HTTP(S) against the TAXII 2.1 REST API: `GET {api_root}/collections/{id}/objects/` with
`Accept: application/taxii+json;version=2.1`, following the envelope's `more`/`next` pagination.
Credentials, when needed, come from the environment (TAPETUM_TAXII_USER, TAPETUM_TAXII_PASSWORD),
never from the command line.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tapetum.errors import InputError

MEDIA_TYPE = "application/taxii+json;version=2.1"


def objects_url(api_root: str, collection: str) -> str:
    root = api_root if api_root.endswith("/") else api_root + "/"
    return urllib.parse.urljoin(root, f"collections/{urllib.parse.quote(collection)}/objects/")


def pull(
    api_root: str,
    collection: str,
    *,
    added_after: str | None = None,
    max_pages: int = 1000,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """All objects of the collection as one STIX bundle dict."""
    url = objects_url(api_root, collection)
    headers = {"Accept": MEDIA_TYPE, "User-Agent": "tapetum-intel"}
    user, password = os.environ.get("TAPETUM_TAXII_USER"), os.environ.get("TAPETUM_TAXII_PASSWORD")
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    objects: list[Any] = []
    params: dict[str, str] = {}
    if added_after:
        params["added_after"] = added_after
    for _ in range(max_pages):
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        req = urllib.request.Request(url + query, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            raise InputError(url, None, f"TAXII server answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InputError(url, None, f"cannot reach the TAXII server: {reason}") from None
        try:
            envelope = json.loads(body)
        except json.JSONDecodeError as exc:
            raise InputError(url, exc.pos, f"TAXII answer is not JSON: {exc.msg}") from None
        if not isinstance(envelope, dict):
            raise InputError(url, None, "TAXII answer is not an envelope object")
        objects.extend(envelope.get("objects") or [])
        nxt = envelope.get("next")
        if not envelope.get("more") or not nxt:
            break
        params["next"] = str(nxt)
    return {"type": "bundle", "id": f"bundle--taxii-{collection}", "objects": objects}
