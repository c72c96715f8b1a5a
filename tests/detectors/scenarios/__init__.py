"""One labelled scenario per registered detector, for the shared contract checks.

`tests/detectors/scenarios/<detector name>.py` defines `build(tmp: Path) -> tuple[Path, set[str]]`:
a synthetic capture with benign traffic from at least 10 hosts plus the attack the detector is
for, and the set of entities (as the detector's `entities` names them) that are attackers.
"""
