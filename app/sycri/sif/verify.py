"""Verifying SIF signatures: legacy PGP, PGP (signed digest metadata) and DSSE.

A signature object links to the object or group it covers. Three formats exist:

- legacy: an OpenPGP clear-signed ``SIFHASH:`` line, a digest of the linked object's
  data (or of the group's objects' data, concatenated);
- PGP: an OpenPGP clear-signed JSON document holding digests of the header, and of
  the descriptor and data of every object in the group;
- DSSE: the same JSON in a DSSE envelope signed with plain public keys (PEM).

OpenPGP is checked by Debian's ``gpgv`` (GnuPG's verify-only tool, the one apt
trusts), DSSE by ``cryptography``: no hand-written signature crypto here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from sycri import command
from sycri.errors import excerpt
from sycri.sif.format import (
    MAGIC,
    VERSION,
    DataType,
    Descriptor,
    HashType,
    SifError,
)
from sycri.sif.reader import SifImage, open_sif

DSSE_PAYLOAD_TYPE = "application/vnd.sylabs.sif-metadata+json"
_CLEARSIGN_BEGIN = b"-----BEGIN PGP SIGNED MESSAGE-----"
_PGP_PUBLIC = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
_PGP_PRIVATE = b"-----BEGIN PGP PRIVATE KEY BLOCK-----"
_HASHLIB: dict[int, str] = {
    HashType.SHA256: "sha256",
    HashType.SHA384: "sha384",
    HashType.SHA512: "sha512",
    HashType.BLAKE2S: "blake2s",
    HashType.BLAKE2B: "blake2b",
}
_JSON_DIGESTS = {
    "sha224": "sha224",
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
    "sha512_224": "sha512_224",
    "sha512_256": "sha512_256",
}
_MAX_SIGNATURE = 1 << 20


@dataclass(frozen=True)
class SignatureResult:
    """The outcome of checking one signature object."""

    signature_id: int  # object id of the signature
    kind: str  # "legacy-pgp", "pgp" or "dsse"
    signed_ids: tuple[int, ...]  # objects the signature covers
    ok: bool
    signer: str  # fingerprint (PGP) or key description (DSSE) that verified it; "" if none
    message: str  # what was verified, or why it failed


@dataclass
class Keys:
    """Key material for verification, sorted by kind."""

    pgp: list[bytes] = field(default_factory=list)  # binary OpenPGP public key packets
    pem: list[tuple[str, object]] = field(default_factory=list)  # (label, public key)


def load_keys(keys: Iterable[str | os.PathLike[str] | bytes]) -> Keys:
    """Read PGP public keys (armored or binary) and PEM public keys (DSSE)."""
    out = Keys()
    for key in keys:
        if isinstance(key, bytes):
            label, data = "key", key
        else:
            label = os.fspath(key)
            try:
                with open(label, "rb") as f:
                    data = f.read(1 << 22)
            except OSError as exc:
                raise SifError(f"cannot read key {excerpt(label)}: {exc.strerror}") from None
        stripped = data.lstrip()
        if stripped.startswith(_PGP_PRIVATE):
            raise SifError(
                f"key {excerpt(label)} is a PGP private key block: give its public key "
                "(gpg --export)"
            )
        if stripped.startswith(_PGP_PUBLIC):
            out.pgp.append(dearmor(stripped, label))
        elif stripped.startswith(b"-----BEGIN"):
            try:
                out.pem.append((label, serialization.load_pem_public_key(stripped)))
            except ValueError as exc:
                raise SifError(f"key {excerpt(label)} is not a PEM public key: {exc}") from None
        elif data and data[0] & 0x80:
            out.pgp.append(data)
        else:
            raise SifError(f"key {excerpt(label)}: not a PGP or PEM public key")
    return out


def dearmor(text: bytes, label: str = "key") -> bytes:
    """The binary packets of an ASCII-armored OpenPGP block (RFC 4880 section 6)."""
    lines = text.decode("ascii", "replace").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if not line.strip()) + 1
    except StopIteration:
        raise SifError(f"key {excerpt(label)}: malformed armor") from None
    body = []
    for line in lines[start:]:
        if line.startswith("-----END") or line.startswith("="):
            break
        body.append(line.strip())
    try:
        return base64.b64decode("".join(body), validate=True)
    except binascii.Error:
        raise SifError(f"key {excerpt(label)}: malformed armor") from None


def _hash(algorithm: str, chunks: Iterable[bytes]) -> bytes:
    h = hashlib.new(algorithm)
    for chunk in chunks:
        h.update(chunk)
    return h.digest()


def header_integrity_bytes(img: SifImage) -> bytes:
    h = img.header
    return h.raw_launch + MAGIC + VERSION + h.id.bytes


def descriptor_integrity_bytes(d: Descriptor, relative_id: int) -> bytes:
    """The descriptor fields a signature protects (offsets are excluded, so objects may move)."""
    fixed = struct.pack(
        "<i?IIqqqq",
        d.data_type,
        d.used,
        relative_id,
        d.raw_link,
        d.size,
        d.created_at,
        d.uid,
        d.gid,
    )
    return fixed + d.raw_name + d.extra


def _object_desc(d: Descriptor) -> str:
    return f"object {d.id}" + (f" ({excerpt(d.name)})" if d.name else "")


def _group_objects(img: SifImage, group_id: int) -> list[Descriptor]:
    return [d for d in img.descriptors if d.group_id == group_id]


def _covered(img: SifImage, sig: Descriptor) -> list[Descriptor]:
    if sig.link_is_group:
        return _group_objects(img, sig.link)
    return [d for d in img.descriptors if d.id == sig.link]


def _check_metadata(img: SifImage, sig: Descriptor, payload: bytes) -> tuple[bool, str]:
    """Compare signed metadata (JSON digests) with the file; (ok, message)."""
    try:
        meta = json.loads(payload)
        header_digest = meta["header"]["digest"]
        objects = meta["objects"]
        if meta.get("version") != 1 or not isinstance(objects, list):
            return False, "unsupported signed metadata version"
    except (ValueError, KeyError, TypeError):
        return False, "signed metadata is not valid JSON of the expected shape"
    if not _digest_matches(header_digest, [header_integrity_bytes(img)]):
        return False, "header integrity compromised (launch script, magic, version or ID changed)"
    group = _covered(img, sig)
    if not group:
        return False, f"signed group {sig.link} not found"
    min_id = min(d.id for d in group)
    by_id = {d.id: d for d in group}
    try:
        signed = {min_id + int(o["relativeId"]): o for o in objects}
    except (KeyError, TypeError, ValueError):
        return False, "signed metadata object entry malformed"
    for oid in by_id:
        if oid not in signed:
            return False, f"{_object_desc(by_id[oid])} is not covered by the signature"
    for oid in signed:
        if oid not in by_id:
            return False, f"signed object {oid} not found"
    for oid, entry in signed.items():
        d = by_id[oid]
        if not _digest_matches(
            entry.get("descriptorDigest"), [descriptor_integrity_bytes(d, oid - min_id)]
        ):
            return False, f"{_object_desc(d)}: descriptor integrity compromised"
        if not _digest_matches(entry.get("objectDigest"), img.iter_object(d)):
            return False, f"{_object_desc(d)}: data integrity compromised"
    return True, "verified " + ", ".join(_object_desc(by_id[i]) for i in sorted(by_id))


def _digest_matches(spec: object, chunks: Iterable[bytes]) -> bool:
    if not isinstance(spec, str) or spec.count(":") != 1:
        return False
    name, hexvalue = spec.split(":")
    algorithm = _JSON_DIGESTS.get(name)
    if algorithm is None:
        return False
    try:
        want = bytes.fromhex(hexvalue)
    except ValueError:
        return False
    return hmac.compare_digest(_hash(algorithm, chunks), want)


def _check_legacy(img: SifImage, sig: Descriptor, plaintext: bytes) -> tuple[bool, str]:
    text = plaintext.removeprefix(b"SIFHASH:\n").rstrip(b"\r\n")
    algorithm = _HASHLIB.get(sig.hash_type or 0)
    if algorithm is None:
        return False, f"unsupported hash type {sig.hash_type}"
    try:
        want = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False, "legacy digest malformed"
    covered = _covered(img, sig)
    if not covered:
        return False, f"signed {'group' if sig.link_is_group else 'object'} {sig.link} not found"

    def chunks() -> Iterator[bytes]:
        for d in covered:
            yield from img.iter_object(d)

    if not hmac.compare_digest(_hash(algorithm, chunks()), want):
        names = ", ".join(_object_desc(d) for d in covered)
        return False, f"{names}: data integrity compromised"
    return True, "verified " + ", ".join(_object_desc(d) for d in covered)


def _pae(payload_type: str, body: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def _verify_with(key: object, sig: bytes, message: bytes, hash_type: int | None) -> bool:
    by_type: dict[int, hashes.HashAlgorithm] = {
        HashType.SHA256: hashes.SHA256(),
        HashType.SHA384: hashes.SHA384(),
        HashType.SHA512: hashes.SHA512(),
    }
    algorithm = by_type.get(hash_type or HashType.SHA256, hashes.SHA256())

    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, message)
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, message, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, message, ec.ECDSA(algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _check_dsse(img: SifImage, sig: Descriptor, data: bytes, keys: Keys) -> tuple[bool, str, str]:
    try:
        env = json.loads(data)
        payload = base64.b64decode(env["payload"], validate=True)
        sigs = [base64.b64decode(s["sig"], validate=True) for s in env["signatures"]]
    except (ValueError, KeyError, TypeError, binascii.Error):
        return False, "", "DSSE envelope malformed"
    if env.get("payloadType") != DSSE_PAYLOAD_TYPE:
        return False, "", "DSSE payload type is not SIF metadata"
    if not keys.pem:
        return False, "", "no PEM public key given for a DSSE signature"
    message = _pae(DSSE_PAYLOAD_TYPE, payload)
    signers = [
        label
        for label, key in keys.pem
        if any(_verify_with(key, s, message, sig.hash_type) for s in sigs)
    ]
    if not signers:
        return False, "", "DSSE envelope not signed by any given key"
    ok, text = _check_metadata(img, sig, payload)
    return ok, ", ".join(signers), text


async def _gpgv(signed: bytes, keyring: bytes) -> tuple[bool, str, bytes, str]:
    """Run gpgv on a clear-signed message; (ok, primary fingerprint, plaintext, error)."""
    with tempfile.TemporaryDirectory(prefix="sycri-gpgv-") as tmp:
        ring, msg, out = (os.path.join(tmp, n) for n in ("keyring.gpg", "msg.asc", "out"))
        with open(ring, "wb") as f:
            f.write(keyring)
        with open(msg, "wb") as f:
            f.write(signed)
        result = await command.run(
            ["gpgv", "--status-fd", "1", "--keyring", ring, "--output", out, msg],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": tmp},
            timeout=60,
            check=False,
            label="gpgv",
        )
        fingerprint = ""
        for line in result.stdout.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 12 and parts[:2] == ["[GNUPG:]", "VALIDSIG"]:
                fingerprint = parts[11]
        if not result.ok or not fingerprint:
            err = result.stderr.decode(errors="replace").strip().splitlines()
            return False, "", b"", (err[-1] if err else "gpgv failed").removeprefix("gpgv: ")
        with open(out, "rb") as f:
            return True, fingerprint, f.read(_MAX_SIGNATURE), ""


async def _check_pgp(
    img: SifImage, sig: Descriptor, data: bytes, keys: Keys
) -> tuple[str, bool, str, str]:
    if not keys.pgp:
        legacy = b"SIFHASH:" in data.split(b"-----BEGIN PGP SIGNATURE-----")[0]
        return ("legacy-pgp" if legacy else "pgp"), False, "", "no PGP public key given"
    ok, fingerprint, plaintext, err = await _gpgv(data, b"".join(keys.pgp))
    legacy = plaintext.startswith(b"SIFHASH:\n") if ok else b"\nSIFHASH:\n" in data
    kind = "legacy-pgp" if legacy else "pgp"
    if not ok:
        return kind, False, "", f"PGP signature not valid: {err}"
    if sig.entity is not None and sig.entity.hex().upper() != fingerprint.upper():
        return kind, False, fingerprint, "signing key does not match the descriptor's entity"
    if legacy:
        ok, text = _check_legacy(img, sig, plaintext)
    else:
        ok, text = _check_metadata(img, sig, plaintext)
    return kind, ok, fingerprint, text


async def verify_image(img: SifImage, keys: Keys) -> list[SignatureResult]:
    results = []
    for sig in img.find(DataType.SIGNATURE):
        covered = tuple(d.id for d in _covered(img, sig))
        if sig.size > _MAX_SIGNATURE:
            results.append(
                SignatureResult(sig.id, "unknown", covered, False, "", "signature object too large")
            )
            continue
        data = img.read_object(sig)
        if data.lstrip().startswith(_CLEARSIGN_BEGIN):
            kind, ok, signer, text = await _check_pgp(img, sig, data, keys)
        elif data.lstrip().startswith(b"{"):
            kind = "dsse"
            ok, signer, text = _check_dsse(img, sig, data, keys)
        else:
            kind, ok, signer, text = "unknown", False, "", "signature format not recognized"
        results.append(SignatureResult(sig.id, kind, covered, ok, signer, text))
    return results


async def verify(
    path: str | os.PathLike[str], keys: Iterable[str | os.PathLike[str] | bytes] = ()
) -> list[SignatureResult]:
    """Check every signature in ``path`` against ``keys`` (PGP public keys, armored or
    binary; PEM public keys for DSSE). An empty list means the file has no signatures.
    A result's ``message`` names the object whose digest no longer matches."""
    loaded = load_keys(keys)
    with open_sif(path) as img:
        return await verify_image(img, loaded)
