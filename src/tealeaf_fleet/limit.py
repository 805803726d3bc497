"""`--limit PATTERN[,PATTERN]`: the hosts a command covers, as Ansible's `--limit` chooses them.

Why: an operator finishes the RTV workstations a run could not reach, redoes one Canister, or
checks one site, without touching (or reading) the rest. A pattern is a host name or a role,
with shell-style wildcards (`can0*`, `hbr0[12]`, `rtv`), matched case-insensitively; several
are separated by commas; a pattern starting with `!` leaves out what it matches. A pattern
that matches nothing is an error (a typo must not silently shrink a change to nothing).

The plan and its digests cover only the selected hosts (`Fleet.only`). TLS cannot be enabled
on part of a Tealeaf fleet (every component must speak the same inter-process protocol, vendor
procedure), so a limited run that would enable (or disable) TLS is refused unless every
Tealeaf server left out is already in the end state (`partial_tls_problems`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.errors import InputError

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Fleet
    from tealeaf_fleet.playbooks import Playbook

FIELD = "--limit"
TLS_SWITCH_OPS = ("enable", "disable")  # the ops that change which protocol a server speaks

LIMIT_HELP = (
    "only these hosts: PATTERN[,PATTERN] of host names or roles, shell wildcards "
    "(e.g. rtv01,rtv02 or can0* or hbr,!hbr02)"
)


def add_argument(parser: Any) -> None:
    """`--limit` as every fleet-wide command spells it."""
    parser.add_argument("--limit", metavar="PATTERN[,PATTERN]", help=LIMIT_HELP)


def patterns(text: str) -> list[str]:
    """The comma-separated patterns, stripped; an empty one is an error."""
    out = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p or p == "!" for p in out):
        raise InputError(
            f"empty pattern in {text!r}",
            field=FIELD,
            hint="host names or roles separated by commas, e.g. rtv01,rtv02",
        )
    return out


def _matches(pattern: str, name: str, role: str) -> bool:
    pattern = pattern.lower()
    return fnmatch.fnmatchcase(name.lower(), pattern) or fnmatch.fnmatchcase(role, pattern)


def selected_names(fleet: Fleet, text: str) -> list[str]:
    """The host names `text` selects, in inventory order. Only exclusions (`!x`) select every
    host but those, as in Ansible."""
    items = patterns(text)
    include = [p for p in items if not p.startswith("!")]
    exclude = [p[1:] for p in items if p.startswith("!")]
    for pattern in include + exclude:
        if not any(_matches(pattern, h.name, h.role) for h in fleet.hosts.values()):
            roles = sorted({h.role for h in fleet.hosts.values()})
            raise InputError(
                f"{pattern!r} matches no host name or role of the inventory",
                field=FIELD,
                hint=f"roles here: {', '.join(roles)}; names: "
                + ", ".join(list(fleet.hosts)[:8])
                + (" ..." if len(fleet.hosts) > 8 else ""),
            )
    chosen = [
        h.name
        for h in fleet.hosts.values()
        if (not include or any(_matches(p, h.name, h.role) for p in include))
        and not any(_matches(p, h.name, h.role) for p in exclude)
    ]
    if not chosen:
        raise InputError(f"{text!r} leaves no host", field=FIELD)
    return chosen


def select(fleet: Fleet, text: str | None) -> Fleet:
    """The fleet `--limit` leaves (the whole fleet when `text` is None)."""
    if text is None:
        return fleet
    return fleet.only(selected_names(fleet, text))


def left_out_servers(fleet: Fleet, limited: Fleet, playbook: Playbook) -> list[str]:
    """Tealeaf servers outside the limit whose protocol the playbook would switch if they were
    in it: empty when the playbook switches nothing or nothing is left out."""
    switching = [p for p in playbook.phases if p.op in TLS_SWITCH_OPS]
    if not switching or not any(
        h.manages_tls and any(h.role in p.roles for p in switching) for h in limited.hosts.values()
    ):
        return []
    return [
        h.name
        for h in fleet.hosts.values()
        if h.name not in limited.hosts
        and h.manages_tls
        and any(h.role in p.roles for p in switching)
    ]


def partial_tls_problems(
    names: list[str],
    facts: Mapping[str, Any],
    *,
    expect_tls: bool,
    pfx_sha256: str | None,
) -> dict[str, list[str]]:
    """Why each left-out server stops a limited run from switching TLS: it is not already in
    the end state (EnableTLS=1 with the fleet's certificate, or EnableTLS off), or could not be
    read (a mixed fleet cannot be ruled out)."""
    from tealeaf_fleet.ops.checks import short_sha, tls_configured

    want = "EnableTLS=1" if expect_tls else "EnableTLS off"
    shown = {True: "EnableTLS=1", False: "EnableTLS off", None: "EnableTLS unknown"}
    out: dict[str, list[str]] = {}
    for name in names:
        f = facts.get(name)
        if not isinstance(f, Mapping):
            out[name] = [f"left out by --limit and not readable ({f}): it must have {want}"]
            continue
        state = tls_configured(f)
        cert = (f.get("security") or {}).get("cert_sha256")
        if state is not expect_tls:
            out[name] = [f"left out by --limit with {shown[state]}: it must already have {want}"]
        elif expect_tls and pfx_sha256 and cert != pfx_sha256:
            out[name] = [
                f"left out by --limit with certificate {short_sha(cert)}: it must already carry "
                f"the fleet's {short_sha(pfx_sha256)}"
            ]
        elif running_mode(f) not in (None, "tls" if expect_tls else "plain"):
            # EnableTLS is read at service start: set, but not restarted since, it runs the
            # other mode (its Data Service's newest startup block says which)
            out[name] = [
                f"left out by --limit with {want} but its Data Service still runs "
                f"{'TLS' if running_mode(f) == 'tls' else 'plain'} (not restarted since): it "
                "must already run the end state"
            ]
    return out


def running_mode(facts: Mapping[str, Any]) -> str | None:
    """ "tls" or "plain" as the host's Data Service logged at its newest start; None when it
    has no Data Service or no startup block was found."""
    mode = (facts.get("data_service") or {}).get("mode")
    return mode if mode in ("tls", "plain") else None


def check_partial_tls(
    fleet: Fleet,
    limited: Fleet,
    playbook: Playbook,
    *,
    read_facts: Callable[[Fleet], Mapping[str, Any]],
    pfx_sha256: str | None,
) -> None:
    """Raise PreflightError (exit 3, nothing changed) when a limited run would leave the
    fleet half on TLS: reads the facts of the left-out servers only. The message says why."""
    from tealeaf_fleet.errors import PreflightError

    rest = left_out_servers(fleet, limited, playbook)
    if not rest:
        return
    facts = read_facts(fleet.only(rest))
    problems = partial_tls_problems(
        rest, facts, expect_tls=playbook.expect_tls, pfx_sha256=pfx_sha256
    )
    if problems:
        verb = "enabled" if playbook.expect_tls else "disabled"
        raise PreflightError(
            f"TLS cannot be {verb} on part of a Tealeaf fleet (every server must speak the same "
            "inter-process protocol, so it is switched everywhere at once): "
            + "; ".join(f"{name}: {items[0]}" for name, items in problems.items())
            + "; include them, or run without --limit. Nothing was changed",
            problems,
        )
