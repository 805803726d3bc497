"""The Portal's `TealeafStatus.exe -verbose` in the lab: the vendor's status report, which with
inter-process TLS on fails until the host trusts TLS 1.2 in the .NET and WinHTTP stacks it uses.

What is modelled (the vendor's TLS procedure, "Generate the status report with TLS enabled"; and
Microsoft's pages on these values):
- with EnableTLS = 1, the report needs, as they were when the host last booted: .NET
  `v2.0.50727` and `v4.0.30319` `SchUseStrongCrypto = 1` and `SystemDefaultTlsVersions = 1` in
  both registry views, WinHTTP `DefaultSecureProtocols` with TLS 1.2 (0x800) in both views, and
  on Windows Server 2008 R2 the SCHANNEL `TLS 1.2\\Client` and `\\Server` keys `Enabled = 1`,
  `DisabledByDefault = 0`
  (https://learn.microsoft.com/dotnet/framework/network-programming/tls,
  https://support.microsoft.com/help/3140245,
  https://learn.microsoft.com/windows-server/security/tls/tls-registry-settings);
- values read at boot, not live: the vendor says to restart the machine after setting them. .NET
  and WinHTTP read them at process start, SCHANNEL at boot; the lab takes the pessimistic
  reading (a reboot is needed for all);
- with EnableTLS = 0 the report runs (plain connections): exit 0.
The failure text is .NET's for a TLS negotiation its client cannot do ("The underlying connection
was closed: An unexpected error occurred on a send."), exit 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tealeaf_fleet.lab.registry import TLS12_CLIENT_KEY, TLS12_SERVER_KEY

if TYPE_CHECKING:
    from tealeaf_fleet.lab.host import LabHost

EXE = r"bin\TealeafStatus.exe"  # under the install folder, on the Portal
NETFX = r"HKLM:\SOFTWARE\Microsoft\.NETFramework"
NETFX_WOW = r"HKLM:\SOFTWARE\Wow6432Node\Microsoft\.NETFramework"
WINHTTP = r"Microsoft\Windows\CurrentVersion\Internet Settings\WinHttp"
TLS12_WINHTTP = 0x800


def required(os_name: str) -> list[tuple[str, str, Any]]:
    """(key, value name, wanted) the report needs; wanted `TLS12_WINHTTP` means "a DWORD with
    that bit set"."""
    out: list[tuple[str, str, Any]] = []
    for root in (NETFX, NETFX_WOW):
        for version in ("v2.0.50727", "v4.0.30319"):
            for name in ("SchUseStrongCrypto", "SystemDefaultTlsVersions"):
                out.append((f"{root}\\{version}", name, 1))
    for view in ("HKLM:\\SOFTWARE\\", "HKLM:\\SOFTWARE\\Wow6432Node\\"):
        out.append((view + WINHTTP, "DefaultSecureProtocols", TLS12_WINHTTP))
    if os_name == "2008r2":
        for key in (TLS12_CLIENT_KEY, TLS12_SERVER_KEY):
            out += [(key, "Enabled", 1), (key, "DisabledByDefault", 0)]
    return out


def snapshot(host: LabHost) -> dict[tuple[str, str], Any]:
    """The values `required` names as they are now (taken at each boot)."""
    return {(k, n): host.reg_get(k, n) for k, n, _ in required(host.config.os)}


def missing(os_name: str, at_boot: dict[tuple[str, str], Any]) -> list[str]:
    """What the report still lacks, as `KEY\\Name` texts."""
    out = []
    for key, name, wanted in required(os_name):
        value = at_boot.get((key, name))
        if wanted == TLS12_WINHTTP:
            ok = isinstance(value, int) and value & TLS12_WINHTTP
        else:
            ok = isinstance(value, int) and value == wanted
        if not ok:
            out.append(f"{key.removeprefix('HKLM:')}\\{name}".removeprefix("\\"))
    return out


def run(host: LabHost, argv: list[str], at_boot: dict[tuple[str, str], Any]) -> tuple[int, str]:
    """TealeafStatus.exe ARGV: (exit code, console output)."""
    verbose = any(a.lower() in ("-verbose", "/verbose") for a in argv)
    lines = [f"Tealeaf Status Report for {host.name.upper()}"]
    if host.tls_enabled():
        lacking = missing(host.config.os, at_boot)
        if lacking:
            lines.append(
                f"ERROR: {host.name.upper()}: The underlying connection was closed: An "
                "unexpected error occurred on a send."
            )
            return 1, "\r\n".join(lines) + "\r\n"
    names = [s.name for s in host.services() if s.name.lower().startswith("tealeaf")]
    if verbose:
        lines += [f"  {n}: {host.service(n).state}" for n in names]
    lines.append("Status report generated.")
    return 0, "\r\n".join(lines) + "\r\n"
