"""Threat intelligence: indicators from STIX 2.1 bundles, plain lists and TAXII 2.1 servers,
kept in the DuckDB store (table `intel`) and matched by the `intel` detector.

- `indicators`: the record, its types, normalisation and merging of duplicates.
- `parse`: plain lists; `stix`: STIX 2.1 bundles (patterns parsed by the `stix2` library).
- `store`: the `intel` table (atomic imports, merges, removal by source).
- `matcher`: vectorised matching of addresses (exact and CIDR), names, URLs, fingerprints.
- `taxii`: an optional pull from a TAXII 2.1 collection (only when asked for).
"""
