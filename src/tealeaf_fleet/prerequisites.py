"""The vendor's prerequisites as registry writes: facts in, the writes a host still needs out.

Why a pure module: the `prerequisites` playbook's action (engine/actions.py), the planner
(`fleet plan --facts` marks hosts with nothing to write) and the change ticket's pre-check
section all ask the same question, "what is still missing here?", and must get the same
answer. Nothing outside the keys below is ever written, and every value has its registry type
(DWORD or String), so the action can check the type it reads back as well as the value.

What is written, only where it is missing (docs/prerequisites.md lists the sources):
- Windows Server 2008 R2: `SCHANNEL\\SendTrustedIssuerList` = 0 and the TLS 1.2 `Server`
  and `Client` keys' `Enabled` = 1, `DisabledByDefault` = 0 (vendor, "TLS 1.2 support in
  Windows 2008 R2"; the Client pair is what the server's own outgoing connections need);
- on the hosts that run TealeafStatus (`prerequisites.status_report_hosts`, every Tealeaf
  server by default): .NET `SchUseStrongCrypto` = 1 and `SystemDefaultTlsVersions` = 1 for
  v2.0.50727 and v4.0.30319, and WinHTTP `DefaultSecureProtocols`, each in the 64-bit and the
  WOW64 view (vendor, "Generate the status report with TLS enabled"). A DefaultSecureProtocols
  that already includes TLS 1.2 is left as the operator set it;
- HBRs: `...\\TeaLeaf Technology\\security\\TLSCertPassword` as a String holding a dummy,
  non-secret text, when absent (vendor, "Known issues": the HBR's spurious event-log error);
- `EnableTLS` = 1 while no certificate pair is imported: set to 0 (vendor, "Windows registry:
  Tealeaf configuration": a preset EnableTLS "must be set to 0").
SCHANNEL, .NET and WinHTTP read these values at boot or process start, so a host where one of
them changed needs a reboot; the TLSCertPassword and EnableTLS writes need none on their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.ops.checks import (
    DOTNET_KEYS,
    SCHANNEL_KEY,
    TEALEAF_KEY,
    TLS12_KEY,
    WINHTTP_KEYS,
    WINHTTP_TLS12,
    Finding,
    is_2008r2,
    pair_imported,
    schannel_on,
)
from tealeaf_fleet.ops.facts import RegistryNumber

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Fleet, Host

DWORD = "DWord"
STRING = "String"
# What the HBR's TLSCertPassword holds when the tool creates it: any string silences the
# event-log error (vendor, "Known issues"); this one says what it is and is no password.
DUMMY_CERT_PASSWORD = "tealeaf-fleet-placeholder-not-a-password"
# Areas whose values take effect only after a reboot (SCHANNEL at boot; .NET and WinHTTP
# settings are read when a process starts, and services run from boot to boot).
REBOOT_AREAS = ("schannel", "dotnet", "winhttp")
DOTNET_VALUES = (
    ("strong_crypto", "SchUseStrongCrypto"),
    ("system_default_tls", "SystemDefaultTlsVersions"),
)


@dataclass(frozen=True)
class Write:
    """One registry value the host still needs: key, name, registry type, value."""

    area: str  # schannel | dotnet | winhttp | tealeaf
    key: str
    name: str
    kind: str  # DWord | String
    value: int | str
    found: Any  # what facts read there (None: absent)

    @property
    def needs_reboot(self) -> bool:
        return self.area in REBOOT_AREAS

    @property
    def create_only(self) -> bool:
        """The HBR placeholder is written only where no value exists and whatever is there is
        never read: TLSCertPassword is TLSTool's key to tealeaf.p12 once a pair is imported."""
        return self.kind == STRING

    def shown(self) -> str:
        """`KEY\\Name = 0xA80 (DWORD), was absent`: the line an operator reads."""
        if self.kind == DWORD:
            number = int(self.value)
            typed = (f"0x{number:X}" if number > 9 else str(number)) + " (DWORD)"
        else:
            typed = "a placeholder string (REG_SZ)"
        was = RegistryNumber.parse(self.found).describe()
        return f"{self.key}\\{self.name} = {typed}, was {was}"


def runs_status_report(fleet: Fleet, host: Host) -> bool:
    """Whether the TealeafStatus settings belong on `host`."""
    chosen = fleet.prerequisites.status_report_hosts
    return host.manages_tls and (chosen is None or host.name in chosen)


def needed_writes(fleet: Fleet, host: Host, facts: Mapping[str, Any]) -> list[Write]:
    """Every write `host` still needs, in the order the playbook makes them."""
    if not host.manages_tls:
        return []
    out: list[Write] = []
    if is_2008r2(facts):
        out.extend(_schannel(facts))
    if runs_status_report(fleet, host):
        out.extend(_status_report(facts, fleet.prerequisites.winhttp_protocols))
    # never beside an imported pair: the value is then the pair's key (absent: a broken
    # import, which a placeholder would not mend)
    no_pair = not pair_imported(facts)
    if host.role == "hbr" and facts.get("tls_cert_password_present") is False and no_pair:
        out.append(
            Write(
                "tealeaf",
                TEALEAF_KEY + r"\security",
                "TLSCertPassword",
                STRING,
                DUMMY_CERT_PASSWORD,
                None,
            )
        )
    if facts.get("enable_tls") == 1 and no_pair:
        out.append(Write("tealeaf", TEALEAF_KEY, "EnableTLS", DWORD, 0, 1))
    return out


def _schannel(facts: Mapping[str, Any]) -> list[Write]:
    schannel = facts.get("schannel") or {}
    out = []
    found = schannel.get("send_trusted_issuer_list")
    if found != 0:
        out.append(Write("schannel", SCHANNEL_KEY, "SendTrustedIssuerList", DWORD, 0, found))
    for side in ("server", "client"):
        key = f"{TLS12_KEY}\\{side.capitalize()}"
        enabled = schannel.get(f"tls12_{side}_enabled")
        if not schannel_on(enabled):
            out.append(Write("schannel", key, "Enabled", DWORD, 1, enabled))
        disabled = schannel.get(f"tls12_{side}_disabled_by_default")
        if disabled != 0:
            out.append(Write("schannel", key, "DisabledByDefault", DWORD, 0, disabled))
    return out


def _status_report(facts: Mapping[str, Any], winhttp_value: int) -> list[Write]:
    out = []
    dotnet = facts.get("dotnet") or {}
    for ver, key in DOTNET_KEYS.items():
        for field_name, value_name in DOTNET_VALUES:
            found = dotnet.get(f"{ver}_{field_name}")
            if found != 1:
                out.append(Write("dotnet", key, value_name, DWORD, 1, found))
    winhttp = facts.get("winhttp") or {}
    for which, key in WINHTTP_KEYS.items():
        found = winhttp.get(which)
        if not (isinstance(found, int) and not isinstance(found, bool) and found & WINHTTP_TLS12):
            out.append(Write("winhttp", key, "DefaultSecureProtocols", DWORD, winhttp_value, found))
    return out


def status_findings(
    fleet: Fleet,
    host: Host,
    facts: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    tls12_probe: Any = None,
) -> list[Finding]:
    """What `fleet status` says about the prerequisites on one host, all warnings (they make
    no fleet inconsistent): the values still missing, a reboot pending, 23443 in its
    configuration files, TLS 1.2 not active since boot on 2008 R2 (`tls12_probe`)."""
    from tealeaf_fleet.ops.checks import (
        WARNING,
        port_23443_files,
        port_23443_text,
        reboot_findings,
        tls12_findings,
        wow64_findings,
    )

    out = []
    writes = needed_writes(fleet, host, facts)
    if writes:
        out.append(
            Finding(
                WARNING,
                "prerequisites_missing",
                f"vendor prerequisites not in place ({len(writes)} value(s)): "
                + "; ".join(w.shown() for w in writes)
                + ": `fleet rollout INVENTORY --playbook prerequisites` writes them"
                + (" and reboots where needed" if reboot_areas(writes) else ""),
                (host.name,),
            )
        )
    out.extend(reboot_findings(host.name, facts, records, block=False))
    out.extend(tls12_findings(host.name, facts, host.tms_port, tls12_probe, block=False))
    out.extend(wow64_findings(host, facts, block=False))
    mentions = port_23443_files(facts) if host.manages_tls else []
    if mentions:
        out.append(
            Finding(WARNING, "port_23443_in_config", port_23443_text(mentions), (host.name,))
        )
    return out


def reboot_areas(writes: list[Write]) -> list[str]:
    """The areas among `writes` that need a reboot, in REBOOT_AREAS order."""
    areas = {w.area for w in writes if w.needs_reboot}
    return [a for a in REBOOT_AREAS if a in areas]
