"""Human-comparable fingerprints of static public keys, in OpenSSH's style."""

import base64
import hashlib

_DOMAIN = b"sealchat static key v1\x00"


def fingerprint(public_key: bytes) -> str:
    """``SHA256:`` + unpadded base64 of SHA-256 over a domain-separated X25519 public key.

    The domain prefix keeps a sealchat fingerprint from ever matching a hash of the same 32
    bytes computed for another purpose.
    """
    digest = hashlib.sha256(_DOMAIN + public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
