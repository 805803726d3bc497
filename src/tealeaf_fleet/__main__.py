"""`python -m tealeaf_fleet` is the same as the `fleet` command."""

from tealeaf_fleet.cli.main import main

raise SystemExit(main())
