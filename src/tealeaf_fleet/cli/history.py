"""`fleet history`: placeholder until its issue lands (registers nothing yet)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    return None
