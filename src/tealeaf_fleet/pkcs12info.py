"""Read a PKCS#12 file's outer structure (no password needed) to learn how it is protected.

Why this exists: whether a PFX imports on Windows Server 2008 R2 .. 2016 (pre-1709) depends on
its encryption algorithms (PBE-SHA1-3DES works, PBES2/AES does not), and `cryptography` does not
expose them. The algorithm identifiers, the MAC and the bag layout are all in the clear, so a
small BER/DER walker (RFC 7292) reads them. BER matters: some Windows and Java tools write
indefinite lengths and constructed OCTET STRINGs, so both are accepted here.

Nothing here decrypts anything; `certs.load_pfx` does that with `cryptography`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --- object identifiers ----------------------------------------------------------------------

OID_DATA = "1.2.840.113549.1.7.1"
OID_ENCRYPTED_DATA = "1.2.840.113549.1.7.6"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_KEY_BAG = "1.2.840.113549.1.12.10.1.1"
OID_SHROUDED_KEY_BAG = "1.2.840.113549.1.12.10.1.2"
OID_CERT_BAG = "1.2.840.113549.1.12.10.1.3"
OID_SAFE_CONTENTS_BAG = "1.2.840.113549.1.12.10.1.6"
OID_PBES2 = "1.2.840.113549.1.5.13"
OID_PBKDF2 = "1.2.840.113549.1.5.12"
OID_PBMAC1 = "1.2.840.113549.1.5.14"

# Names as `openssl pkcs12 -info` prints them, so operators can compare the two outputs.
PBE_NAMES = {
    "1.2.840.113549.1.12.1.1": "pbeWithSHA1And128BitRC4",
    "1.2.840.113549.1.12.1.2": "pbeWithSHA1And40BitRC4",
    "1.2.840.113549.1.12.1.3": "pbeWithSHA1And3-KeyTripleDES-CBC",
    "1.2.840.113549.1.12.1.4": "pbeWithSHA1And2-KeyTripleDES-CBC",
    "1.2.840.113549.1.12.1.5": "pbeWithSHA1And128BitRC2-CBC",
    "1.2.840.113549.1.12.1.6": "pbeWithSHA1And40BitRC2-CBC",
    "1.2.840.113549.1.5.3": "pbeWithMD5AndDES-CBC",
    "1.2.840.113549.1.5.10": "pbeWithSHA1AndDES-CBC",
}
CIPHER_NAMES = {
    "2.16.840.1.101.3.4.1.2": "AES-128-CBC",
    "2.16.840.1.101.3.4.1.22": "AES-192-CBC",
    "2.16.840.1.101.3.4.1.42": "AES-256-CBC",
    "1.2.840.113549.3.7": "DES-EDE3-CBC",
    "1.3.14.3.2.7": "DES-CBC",
    "1.2.840.113549.3.2": "RC2-CBC",
}
DIGEST_NAMES = {
    "1.2.840.113549.2.5": "md5",
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    "1.2.840.113549.2.7": "hmacWithSHA1",
    "1.2.840.113549.2.9": "hmacWithSHA256",
    "1.2.840.113549.2.10": "hmacWithSHA384",
    "1.2.840.113549.2.11": "hmacWithSHA512",
}

# PBE algorithm names that Windows Server 2008 R2 .. 2016 (before 1709) can import.
LEGACY_PBE = frozenset(PBE_NAMES.values())


class NotPkcs12(ValueError):
    """The bytes are not a PKCS#12 PFX structure (`reason` says what was wrong)."""


# --- a minimal BER reader --------------------------------------------------------------------


@dataclass
class Node:
    """One BER element: `tag` is the identifier octet; `value` the content (primitive, or the
    concatenation of a constructed OCTET STRING); `children` for constructed elements."""

    tag: int
    value: bytes = b""
    children: list[Node] = field(default_factory=list)

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


_MAX_DEPTH = 40


def _parse(data: bytes, pos: int, depth: int) -> tuple[Node, int]:
    if depth > _MAX_DEPTH:
        raise NotPkcs12("nesting too deep")
    if pos + 2 > len(data):
        raise NotPkcs12("truncated element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise NotPkcs12("high tag numbers are not used in PKCS#12")
    pos += 1
    first = data[pos]
    pos += 1
    indefinite = False
    if first < 0x80:
        length = first
    elif first == 0x80:
        indefinite = True
        length = 0
    else:
        n = first & 0x7F
        if n > 4 or pos + n > len(data):
            raise NotPkcs12("bad length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    node = Node(tag)
    if not tag & 0x20:
        if indefinite:
            raise NotPkcs12("indefinite length on a primitive element")
        end = pos + length
        if end > len(data):
            raise NotPkcs12("element runs past the end of the data")
        node.value = data[pos:end]
        return node, end
    if indefinite:
        while True:
            if data[pos : pos + 2] == b"\x00\x00":
                pos += 2
                break
            child, pos = _parse(data, pos, depth + 1)
            node.children.append(child)
    else:
        end = pos + length
        if end > len(data):
            raise NotPkcs12("element runs past the end of the data")
        while pos < end:
            child, pos = _parse(data, pos, depth + 1)
            node.children.append(child)
        if pos != end:
            raise NotPkcs12("element length mismatch")
    if tag == 0x24:  # constructed OCTET STRING (BER): its value is the parts joined
        node.value = b"".join(c.value for c in node.children)
    return node, pos


def parse(data: bytes) -> Node:
    """Parse one complete BER element that spans `data` (trailing bytes are an error)."""
    node, end = _parse(data, 0, 0)
    if end != len(data):
        raise NotPkcs12(f"{len(data) - end} bytes after the end of the structure")
    return node


def decode_oid(value: bytes) -> str:
    if not value:
        raise NotPkcs12("empty object identifier")
    parts: list[int] = []
    n = 0
    for b in value:
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(n)
            n = 0
    first = parts[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(p) for p in head + parts[1:])


def _expect(node: Node, tag: int, what: str) -> Node:
    if node.tag != tag:
        raise NotPkcs12(f"{what}: expected tag 0x{tag:02x}, found 0x{node.tag:02x}")
    return node


def _oid(node: Node, what: str) -> str:
    return decode_oid(_expect(node, 0x06, what).value)


def _int(node: Node, what: str) -> int:
    return int.from_bytes(_expect(node, 0x02, what).value, "big", signed=True)


def _octets(node: Node, what: str) -> bytes:
    if node.tag not in (0x04, 0x24):
        raise NotPkcs12(f"{what}: expected an OCTET STRING")
    return node.value


def _explicit0(node: Node, what: str) -> Node:
    if node.tag != 0xA0 or len(node.children) != 1:
        raise NotPkcs12(f"{what}: expected [0] EXPLICIT content")
    return node.children[0]


# --- algorithm names -------------------------------------------------------------------------


def algorithm_name(alg: Node) -> str:
    """Name an AlgorithmIdentifier the way `openssl pkcs12 -info` would (PBES2 as
    `PBES2/<cipher>`, matching docs/architecture.md)."""
    _expect(alg, 0x30, "AlgorithmIdentifier")
    oid = _oid(alg.children[0], "algorithm")
    if oid in PBE_NAMES:
        return PBE_NAMES[oid]
    if oid == OID_PBES2 and len(alg.children) > 1:
        params = alg.children[1]
        try:
            scheme = _oid(params.children[1].children[0], "PBES2 encryptionScheme")
        except (IndexError, NotPkcs12):
            return "PBES2"
        return f"PBES2/{CIPHER_NAMES.get(scheme, scheme)}"
    return DIGEST_NAMES.get(oid, oid)


def _pbes2_prf(alg: Node) -> str | None:
    """The PBKDF2 PRF of a PBES2 AlgorithmIdentifier (default hmacWithSHA1), else None."""
    try:
        if _oid(alg.children[0], "algorithm") != OID_PBES2:
            return None
        kdf = alg.children[1].children[0]
        if _oid(kdf.children[0], "kdf") != OID_PBKDF2:
            return None
        for part in kdf.children[1].children[2:]:
            if part.tag == 0x30:
                return DIGEST_NAMES.get(_oid(part.children[0], "prf"), "?")
        return "hmacWithSHA1"
    except (IndexError, NotPkcs12):
        return None


# --- the PFX ---------------------------------------------------------------------------------


@dataclass
class Pkcs12Info:
    """How a PFX is protected and what it holds (counts only; nothing is decrypted)."""

    version: int
    mac: str | None = None  # e.g. "sha1", "sha256"; None when the file has no MAC
    mac_iterations: int | None = None
    key_encryption: list[str] = field(default_factory=list)  # one per key bag; "none" = clear
    cert_encryption: list[str] = field(default_factory=list)  # one per authSafe part with certs
    kdf_prf: list[str] = field(default_factory=list)  # PBES2 PRFs seen
    keys: int = 0
    certs_in_clear: int = 0
    encrypted_parts: int = 0

    @property
    def algorithms(self) -> list[str]:
        """Every encryption algorithm in use (no duplicates), key first."""
        out: list[str] = []
        for name in self.key_encryption + self.cert_encryption:
            if name not in out:
                out.append(name)
        return out


def _record_cipher(info: Pkcs12Info, alg: Node, names: list[str]) -> None:
    """Note how one part is encrypted: its algorithm into `names`, and its PBES2 PRF (if any)
    into `kdf_prf`, the same way for the key bags and the encrypted certificate parts."""
    names.append(algorithm_name(alg))
    prf = _pbes2_prf(alg)
    if prf:
        info.kdf_prf.append(prf)


def _walk_safe_contents(info: Pkcs12Info, sc: Node, depth: int = 0) -> None:
    _expect(sc, 0x30, "SafeContents")
    for bag in sc.children:
        _expect(bag, 0x30, "SafeBag")
        bag_id = _oid(bag.children[0], "bagId")
        if bag_id == OID_SHROUDED_KEY_BAG:
            epki = _explicit0(bag.children[1], "pkcs8ShroudedKeyBag")
            info.keys += 1
            _record_cipher(info, epki.children[0], info.key_encryption)
        elif bag_id == OID_KEY_BAG:
            info.keys += 1
            info.key_encryption.append("none")
        elif bag_id == OID_CERT_BAG:
            info.certs_in_clear += 1
        elif bag_id == OID_SAFE_CONTENTS_BAG and depth < 4:
            _walk_safe_contents(info, _explicit0(bag.children[1], "safeContentsBag"), depth + 1)


def read_info(data: bytes) -> Pkcs12Info:
    """Walk a PFX's structure. Raises `NotPkcs12` when `data` is not PKCS#12."""
    try:
        pfx = parse(data)
        _expect(pfx, 0x30, "PFX")
        if len(pfx.children) < 2:
            raise NotPkcs12("PFX has too few parts")
        info = Pkcs12Info(version=_int(pfx.children[0], "version"))
        if info.version != 3:
            raise NotPkcs12(f"PFX version {info.version}, expected 3")
        auth = _expect(pfx.children[1], 0x30, "authSafe")
        ctype = _oid(auth.children[0], "authSafe contentType")
        if ctype != OID_DATA:
            raise NotPkcs12("public-key (signed) PFX integrity is not supported")
        safes = parse(_octets(_explicit0(auth.children[1], "authSafe content"), "authSafe"))
        _expect(safes, 0x30, "AuthenticatedSafe")
        for ci in safes.children:
            ct = _oid(ci.children[0], "ContentInfo contentType")
            if ct == OID_DATA:
                sc = parse(_octets(_explicit0(ci.children[1], "data"), "SafeContents"))
                _walk_safe_contents(info, sc)
            elif ct == OID_ENCRYPTED_DATA:
                ed = _explicit0(ci.children[1], "encryptedData")
                eci = _expect(ed.children[1], 0x30, "EncryptedContentInfo")
                info.encrypted_parts += 1
                _record_cipher(info, eci.children[1], info.cert_encryption)
            elif ct == OID_ENVELOPED_DATA:
                info.encrypted_parts += 1
                info.cert_encryption.append("envelopedData")
            else:
                raise NotPkcs12(f"unknown authSafe content type {ct}")
        if len(pfx.children) > 2:
            mac_data = _expect(pfx.children[2], 0x30, "MacData")
            digest_info = _expect(mac_data.children[0], 0x30, "DigestInfo")
            info.mac = algorithm_name(digest_info.children[0])
            if decode_oid(digest_info.children[0].children[0].value) == OID_PBMAC1:
                info.mac = "PBMAC1"
            info.mac_iterations = (
                _int(mac_data.children[2], "iterations") if len(mac_data.children) > 2 else 1
            )
        return info
    except IndexError:
        raise NotPkcs12("a PFX part is missing") from None
