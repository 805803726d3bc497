"""Inventory loading: every invalid case names file:line:field; valid ones load as specified.

Invalid cases are data: `tests/data/inventory/invalid/*.yaml`, each starting with
`# expect: LINE FIELD MESSAGE-FRAGMENT` (FIELD `-` when the error has none).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.inventory import ROLES, TLS_ROLES, WINDOWS_ROLES, load_fleet
from tealeaf_fleet.secrets import Secret

DATA = Path(__file__).parent / "data" / "inventory"
INVALID = sorted((DATA / "invalid").glob("*.yaml"))


def _expectation(path: Path) -> tuple[int, str | None, str]:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), path
    line, fld, fragment = first[len("# expect: ") :].split(" ", 2)
    return int(line), (None if fld == "-" else fld), fragment


def test_invalid_cases_are_many() -> None:
    assert len(INVALID) >= 30


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_inventory_names_file_line_field(path: Path) -> None:
    line, fld, fragment = _expectation(path)
    with pytest.raises(InputError) as info:
        load_fleet(path)
    exc = info.value
    assert (exc.file, exc.line, exc.field) == (str(path), line, fld), str(exc)
    prefix = f"{path}:{line}: " + (f"{fld}: " if fld else "")
    assert str(exc).startswith(prefix), str(exc)
    assert fragment in str(exc)
    assert exc.exit_code == 2


def _write_secret(path: Path, value: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n", encoding="utf-8")
    os.chmod(path, mode)


@pytest.fixture
def lab_like(tmp_path: Path) -> Path:
    inv = tmp_path / "inventory.yaml"
    shutil.copy(DATA / "valid" / "lab_like.yaml", inv)
    _write_secret(tmp_path / "secrets" / "winrm.pw", "winrm-Secret-1")
    _write_secret(tmp_path / "secrets" / "pfx.pw", "pfx-Secret-2")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return inv


def test_lab_like_inventory_loads_with_overrides(lab_like: Path) -> None:
    fleet = load_fleet(lab_like)
    base = lab_like.parent.resolve()
    assert list(fleet.hosts) == ["portal01", "hbr01", "can01", "pca01", "rtv01"]
    portal = fleet.hosts["portal01"]
    assert portal.winrm.endpoint(portal.address) == "https://127.0.0.1:40001/wsman"
    assert (portal.data_service_port, portal.tms_port) == (41001, 42001)
    can = fleet.hosts["can01"]
    assert (can.winrm.scheme, can.winrm.transport, can.winrm.port) == ("http", "ntlm", 40003)
    assert can.data_service_port == 23000 and can.tms_port == 20000  # defaults
    assert can.search_port == 19000 and portal.search_port == 41900  # default, per host
    assert fleet.normalized["hosts"]["portal01"]["search_port"] == 41900  # in the digest
    assert can.winrm.username == "labadmin"  # inherited default
    assert fleet.hosts["rtv01"].install_dir == "D:\\RTV"
    assert fleet.install_dir == "C:\\Program Files\\Tealeaf"
    # relative paths resolve against the inventory folder
    assert portal.winrm.password_file == base / "secrets" / "winrm.pw"
    assert portal.winrm.ca_bundle == base / "ca.pem"
    assert fleet.certificate.path == base / "pfx" / "TCXcert.pfx"
    assert fleet.rollout.soak_s == 0 and fleet.rollout.health_timeout_s == 60
    assert [h.name for h in fleet.windows_hosts()] == ["portal01", "hbr01", "can01", "rtv01"]
    assert fleet.hosts["rtv01"].is_windows and not fleet.hosts["rtv01"].manages_tls
    assert not fleet.hosts["pca01"].is_windows
    assert fleet.warnings == []
    fleet.require_files(portal)


def test_password_files_resolve_and_are_not_in_normalized(lab_like: Path) -> None:
    fleet = load_fleet(lab_like)
    pw = fleet.winrm_password(fleet.hosts["hbr01"])
    assert isinstance(pw, Secret) and pw.reveal() == "winrm-Secret-1"
    assert fleet.pfx_password().reveal() == "pfx-Secret-2"
    text = repr(fleet.normalized)
    assert "winrm-Secret-1" not in text and "pfx-Secret-2" not in text
    assert fleet.normalized["certificate"]["password_file"] == "secrets/pfx.pw"


def test_normalized_is_independent_of_the_folder(lab_like: Path, tmp_path: Path) -> None:
    other = tmp_path / "moved"
    shutil.copytree(lab_like.parent, other, ignore=shutil.ignore_patterns("moved"))
    for p in (other / "secrets").iterdir():
        os.chmod(p, 0o600)
    assert load_fleet(other / "inventory.yaml").normalized == load_fleet(lab_like).normalized


def test_password_file_readable_by_others_is_refused(lab_like: Path) -> None:
    os.chmod(lab_like.parent / "secrets" / "winrm.pw", 0o644)
    with pytest.raises(InputError) as info:
        load_fleet(lab_like)
    assert str(info.value).startswith(f"{lab_like}:9: winrm.password_file: ")
    assert "readable by group or others" in str(info.value)


def test_password_file_missing_is_refused(lab_like: Path) -> None:
    (lab_like.parent / "secrets" / "pfx.pw").unlink()
    with pytest.raises(InputError) as info:
        load_fleet(lab_like)
    assert str(info.value).startswith(f"{lab_like}:14: certificate.password_file: ")


def test_missing_ca_bundle_is_reported_when_connecting(lab_like: Path) -> None:
    (lab_like.parent / "ca.pem").unlink()
    fleet = load_fleet(lab_like)  # planning does not need it
    with pytest.raises(InputError) as info:
        fleet.require_files(fleet.hosts["hbr01"])
    assert str(info.value).startswith(f"{lab_like}:10: winrm.ca_bundle: ")


def test_password_env_is_resolved_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TLF_TEST_WINRM_PW", raising=False)
    monkeypatch.delenv("TLF_TEST_PFX_PW", raising=False)
    path = DATA / "valid" / "anchors.yaml"
    fleet = load_fleet(path)  # unset variables are fine until a secret is needed
    with pytest.raises(InputError) as info:
        fleet.winrm_password(fleet.hosts["hbr02"])
    assert str(info.value).startswith(f"{path}:4: winrm.password_env: ")
    assert "TLF_TEST_WINRM_PW" in str(info.value)
    with pytest.raises(InputError) as info:
        fleet.pfx_password()
    assert str(info.value).startswith(f"{path}:7: certificate.password_env: ")
    monkeypatch.setenv("TLF_TEST_WINRM_PW", "from-env-3")
    assert fleet.winrm_password(fleet.hosts["hbr01"]).reveal() == "from-env-3"


def test_anchors_merge_keys_and_explicit_unencrypted(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = load_fleet(DATA / "valid" / "anchors.yaml")
    assert fleet.hosts["hbr02"].role == "hbr" and fleet.hosts["hbr02"].address == "10.0.0.2"
    other = fleet.hosts["other01"].winrm
    assert (other.scheme, other.transport, other.port) == ("http", "basic", 5985)
    assert other.allow_unencrypted


def test_validate_certs_false_is_a_warning() -> None:
    path = DATA / "valid" / "anchors.yaml"
    fleet = load_fleet(path)
    assert len(fleet.warnings) == 1
    assert fleet.warnings[0].startswith(f"{path}:5: winrm.validate_certs is false")
    assert not fleet.hosts["hbr01"].winrm.validate_certs


def test_host_override_of_validate_certs_warns_per_host(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        "winrm: {username: u}\nhosts:\n"
        "  a: {address: h1, role: hbr}\n"
        "  b: {address: h2, role: hbr, winrm: {validate_certs: false}}\n"
    )
    fleet = load_fleet(inv)
    assert fleet.hosts["a"].winrm.validate_certs
    assert [w.split(": ", 2)[1] for w in fleet.warnings] == [
        "hosts.b.winrm.validate_certs is false"
    ]


def test_pca_needs_no_winrm_settings(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text("hosts:\n  pca01: {address: 10.0.0.9, role: pca, pca_build: 3682-24}\n")
    fleet = load_fleet(inv)
    assert fleet.hosts["pca01"].pca_build == "3682-24"
    assert fleet.windows_hosts() == []


def test_example_inventory_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).parents[1] / "inventory.example.yaml"
    fleet = load_fleet(example)
    roles = [h.role for h in fleet.hosts.values()]
    assert {r: roles.count(r) for r in ROLES} == {
        "portal": 1,
        "hbr": 2,
        "canister": 3,
        "report": 1,
        "other": 0,
        "pca": 1,
        "rtv": 1,
    }
    assert fleet.hosts["can03"].install_dir == "E:\\Tealeaf"
    # every key of the example carries a comment (on its line or the line above), except the
    # repeated host entries that the first ones explain
    lines = example.read_text().splitlines()
    seen_keys: set[str] = set()
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        key = stripped.split(":", 1)[0]
        commented = "#" in stripped or lines[n - 2].strip().startswith("#")
        if not commented and key not in seen_keys and line.startswith("    "):
            pytest.fail(f"inventory.example.yaml:{n} has no comment: {line}")
        seen_keys.add(key)


def test_role_constants() -> None:
    assert set(TLS_ROLES) < set(WINDOWS_ROLES) < set(ROLES)
    assert "pca" not in WINDOWS_ROLES and "rtv" not in TLS_ROLES


def test_missing_inventory_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_fleet(tmp_path / "nope.yaml")


def test_merge_keys_from_two_anchors_then_explicit_override(tmp_path: Path) -> None:
    import yaml

    text = (
        "winrm: {username: u}\nhosts:\n"
        "  h1: &a {address: a1, role: hbr}\n"
        "  h2: &b {address: a2, role: canister}\n"
        "  h3:\n    <<: [*a, *b]\n    address: a3\n"
    )
    inv = tmp_path / "inv.yaml"
    inv.write_text(text)
    fleet = load_fleet(inv)
    assert fleet.hosts["h3"].address == "a3"  # explicit key overrides the merged one
    # merged values follow PyYAML's own reading of the same document
    assert fleet.hosts["h3"].role == yaml.safe_load(text)["hosts"]["h3"]["role"]


def test_endpoint_brackets_ipv6(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        "winrm: {username: u}\nhosts:\n"
        "  a: {address: 'fd00::5', role: hbr}\n"
        "  b: {address: '[fd00::6]', role: hbr}\n"
        "  c: {address: ws_rtv_01, role: rtv}\n"
    )
    fleet = load_fleet(inv)
    assert fleet.hosts["a"].winrm.endpoint("fd00::5") == "https://[fd00::5]:5986/wsman"
    assert fleet.hosts["b"].winrm.endpoint("[fd00::6]") == "https://[fd00::6]:5986/wsman"
