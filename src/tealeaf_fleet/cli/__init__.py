"""Command-line front end: argparse and rich rendering only; no engine logic here."""
