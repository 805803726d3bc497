"""Remote operations: one `.ps1` script per op (package data under `scripts/`) plus a Python side
that builds its parameters and parses its JSON result. See docs/architecture.md
("Remote ops") for the contract."""
