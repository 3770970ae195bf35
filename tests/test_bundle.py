"""Sealed license bundles: round trip, strict rejection of every tampering, the verified cache."""
from __future__ import annotations

import base64
import json
import os
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import bundle
from gateway.bundle import (
    ALG,
    BEGIN,
    END,
    MAX_TEXT_CHARS,
    BundleError,
    VerifiedBundles,
    key_id,
    open_bundle,
    parse_public_key,
    public_key_text,
    seal,
)

ISSUER = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()
RECIPIENT = X25519PrivateKey.generate()
OTHER_RECIPIENT = X25519PrivateKey.generate()
TRUSTED = {key_id(ISSUER.public_key()): ISSUER.public_key()}
PAYLOAD = {"license_id": "lic_ABCDEFGHIJKLMNOPQRST", "key_hash": "ab" * 32, "customer": "Ünïcode AG",
           "features": ["export", "reports.*"], "seats": 25, "expires_at": None}
HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make(payload: dict[str, Any] = PAYLOAD, *, issuer: Ed25519PrivateKey = ISSUER,
         recipient: X25519PrivateKey = RECIPIENT) -> str:
    return seal(payload, issuer=issuer, issuer_key_id=key_id(issuer.public_key()),
                recipient=recipient.public_key(), recipient_key_id=key_id(recipient.public_key()))


def opened(text: str, recipient: X25519PrivateKey = RECIPIENT, trusted: Any = None) -> dict[str, Any]:
    return open_bundle(text, recipient=recipient, trusted_issuers=TRUSTED if trusted is None else trusted)


def decoded(text: str) -> bytes:
    return bundle._unarmor(text)


def encoded(data: bytes) -> str:
    return bundle._armor(data)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def canonical(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def forge(plaintext: bytes = b'{"a":1}', *, nonce_len: int = 12, signer: Ed25519PrivateKey = ISSUER,
          to: X25519PrivateKey = RECIPIENT, edit: Callable[[dict], dict] = lambda h: h,
          encode: Callable[[dict], bytes] = canonical) -> str:
    """A bundle built step by step like ``seal`` does, with one deliberate defect at a time.

    Everything the defect does not touch is valid (correctly encrypted and signed by a trusted
    issuer), so a rejection proves that the check for that defect exists.
    """
    ephemeral = X25519PrivateKey.generate()
    epk = ephemeral.public_key().public_bytes_raw()
    nonce = os.urandom(nonce_len)
    header = edit({"v": 1, "alg": ALG, "kid": key_id(signer.public_key()), "rid": key_id(to.public_key()),
                   "epk": b64url(epk), "nonce": b64url(nonce)})
    header_bytes = encode(header)
    key = bundle._content_key(ephemeral.exchange(to.public_key()), epk, to.public_key().public_bytes_raw())
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, header_bytes)
    signature = signer.sign(bundle._signed_message(header_bytes, ciphertext))
    return encoded(bundle._pack(header_bytes, ciphertext, signature))


def rejected(text: Any, **kwargs: Any) -> BundleError:
    with pytest.raises(BundleError) as info:
        opened(text, **kwargs)
    return info.value


SEALED = make()
SEALED_BYTES = decoded(SEALED)


# -- round trip and text form -------------------------------------------------------------

def test_round_trip_returns_the_payload() -> None:
    assert opened(SEALED) == PAYLOAD


def test_text_form_is_armored_base64_wrapped_at_64() -> None:
    lines = SEALED.splitlines()
    assert lines[0] == BEGIN and lines[-1] == END
    assert all(len(line) == 64 for line in lines[1:-2]) and 0 < len(lines[-2]) <= 64
    assert "ab" * 32 not in SEALED  # the payload is encrypted, not merely encoded


def test_body_rewrapped_or_with_crlf_still_opens() -> None:
    body = "".join(SEALED.splitlines()[1:-1])
    assert opened(f"\r\n{BEGIN}\r\n{body[:10]}\r\n{body[10:]}\r\n{END}\r\n") == PAYLOAD


def test_two_seals_of_one_payload_differ() -> None:
    assert make() != make()


def test_seal_refuses_a_key_id_that_is_not_the_keys() -> None:
    with pytest.raises(ValueError):
        seal(PAYLOAD, issuer=ISSUER, issuer_key_id="0" * 16, recipient=RECIPIENT.public_key(),
             recipient_key_id=key_id(RECIPIENT.public_key()))


def test_forge_helper_builds_a_valid_bundle() -> None:
    assert opened(forge()) == {"a": 1}


# -- tampering, property-based ------------------------------------------------------------

def accepted(texts: Iterable[str]) -> list[str]:
    """The texts among ``texts`` that open (any other exception than BundleError propagates)."""
    wrong = []
    for text in texts:
        try:
            opened(text)
        except BundleError:
            continue
        wrong.append(text)
    return wrong


def test_every_single_bit_flip_is_rejected() -> None:
    """All of them, not a sample: a few thousand, well under a second."""
    def flipped(bit: int) -> str:
        data = bytearray(SEALED_BYTES)
        data[bit // 8] ^= 1 << (bit % 8)
        return encoded(bytes(data))
    assert accepted(flipped(bit) for bit in range(len(SEALED_BYTES) * 8)) == []


def test_every_truncation_is_rejected() -> None:
    cuts = (encoded(SEALED_BYTES[:length]) if length else f"{BEGIN}\n{END}\n" for length in range(len(SEALED_BYTES)))
    assert accepted(cuts) == []


def test_every_truncation_of_the_text_is_rejected() -> None:
    final_newline_optional = len(SEALED.rstrip())
    assert accepted(SEALED[:length] for length in range(1, final_newline_optional)) == []


@HYPOTHESIS
@given(st.binary(min_size=1, max_size=64))
def test_trailing_bytes_are_rejected(extra: bytes) -> None:
    rejected(encoded(SEALED_BYTES + extra))


@HYPOTHESIS
@given(st.text(max_size=300) | st.binary(max_size=300).map(encoded))
def test_arbitrary_input_only_ever_raises_bundle_error(text: str) -> None:
    rejected(text)


# -- tampering, one defect at a time -------------------------------------------------------

@pytest.mark.parametrize("nonce_len", [8, 11, 13, 16])
def test_wrong_nonce_length_is_rejected_even_when_signed(nonce_len: int) -> None:
    rejected(forge(nonce_len=nonce_len))


def swap(a: str, b: str) -> Callable[[dict], dict]:
    return lambda h: {**h, a: h[b], b: h[a]}


@pytest.mark.parametrize("edit", [
    swap("kid", "rid"), swap("epk", "nonce"), swap("alg", "kid"),
    lambda h: {**h, "v": 2}, lambda h: {**h, "v": "1"}, lambda h: {**h, "v": True}, lambda h: {**h, "v": 1.0},
    lambda h: {**h, "alg": ALG.lower()}, lambda h: {**h, "kid": h["kid"].upper()},
    lambda h: {**h, "epk": h["epk"] + "="}, lambda h: {**h, "extra": 1},
    lambda h: {k: v for k, v in h.items() if k != "rid"},
], ids=["kid<->rid", "epk<->nonce", "alg<->kid", "v=2", "v-str", "v-bool", "v-float", "alg-case",
        "kid-case", "epk-padded", "extra-field", "missing-field"])
def test_malformed_header_is_rejected_even_when_signed(edit: Callable[[dict], dict]) -> None:
    rejected(forge(edit=edit))


@pytest.mark.parametrize("encode", [
    lambda h: json.dumps(h, sort_keys=True).encode(),  # whitespace
    lambda h: json.dumps(h, separators=(",", ":")).encode(),  # key order
    lambda h: canonical(h).replace(b'"v":1', b'"v":1,"v":1'),  # duplicate key
    lambda h: canonical(h).decode().encode("utf-16"),
], ids=["spaces", "order", "duplicate", "utf16"])
def test_non_canonical_header_is_rejected_even_when_signed(encode: Callable[[dict], bytes]) -> None:
    rejected(forge(encode=encode))


@pytest.mark.parametrize("plaintext", [b"[1]", b'{"a":1,"a":2}', b'{"a":NaN}', b"\xff", b""])
def test_payload_must_be_one_json_object(plaintext: bytes) -> None:
    rejected(forge(plaintext))


def test_header_from_another_bundle_with_this_ciphertext_is_rejected() -> None:
    header_a, _, signature_a = bundle._unpack(decoded(make()))
    _, ciphertext_b, signature_b = bundle._unpack(SEALED_BYTES)
    resigned = ISSUER.sign(bundle._signed_message(header_a, ciphertext_b))
    for signature in (signature_a, signature_b, resigned):  # resigned: AES-GCM still refuses it
        rejected(encoded(bundle._pack(header_a, ciphertext_b, signature)))


def test_untrusted_issuer_is_rejected() -> None:
    rejected(make(issuer=STRANGER))


def test_trusted_kid_with_a_strangers_signature_is_rejected() -> None:
    rejected(forge(signer=STRANGER, edit=lambda h: {**h, "kid": key_id(ISSUER.public_key())}))


def test_trust_map_with_a_wrong_key_under_the_kid_is_rejected() -> None:
    rejected(SEALED, trusted={key_id(ISSUER.public_key()): STRANGER.public_key()})


def test_wrong_recipient_is_rejected() -> None:
    rejected(SEALED, recipient=OTHER_RECIPIENT)


def test_bundle_for_another_recipient_relabelled_to_us_fails_decryption() -> None:
    rejected(forge(to=OTHER_RECIPIENT, edit=lambda h: {**h, "rid": key_id(RECIPIENT.public_key())}))


def test_oversized_text_is_rejected_before_parsing() -> None:
    rejected(SEALED + " " * MAX_TEXT_CHARS)


@pytest.mark.parametrize("text", [None, b"bytes", 42])
def test_non_text_input_is_rejected(text: Any) -> None:
    rejected(text)


def test_error_is_generic_and_carries_no_key_material() -> None:
    errors = [rejected(text) for text in (make(issuer=STRANGER), forge(nonce_len=16), SEALED[:-40])]
    errors.append(rejected(SEALED, recipient=OTHER_RECIPIENT))
    secrets = [k.private_bytes_raw() for k in (ISSUER, RECIPIENT, OTHER_RECIPIENT)]
    needles = [s.hex() for s in secrets] + [b64url(s) for s in secrets] + [base64.b64encode(s).decode() for s in secrets]
    for error in errors:
        assert str(error) == "invalid license bundle"
        assert error.__cause__ is None and error.__context__ is None
        rendered = "".join(traceback.format_exception(error)) + repr(error)
        assert not any(needle in rendered for needle in needles)


# -- key ids and public key text -------------------------------------------------------------

def test_key_id_is_16_hex_and_stable() -> None:
    kid = key_id(ISSUER.public_key())
    assert len(kid) == 16 and int(kid, 16) >= 0 and kid == key_id(ISSUER.public_key())


@pytest.mark.parametrize("key,kind", [(ISSUER.public_key(), "ed25519"), (RECIPIENT.public_key(), "x25519")])
def test_public_key_text_round_trips(key: Any, kind: Any) -> None:
    text = public_key_text(key)
    assert text.startswith(kind + ":")
    assert parse_public_key(f"  {text}\n", kind).public_bytes_raw() == key.public_bytes_raw()


@pytest.mark.parametrize("text", [
    public_key_text(RECIPIENT.public_key()),  # wrong kind for ed25519
    "ed25519:", "ed25519:AAAA", "ed25519:" + b64url(b"\x01" * 33), "ed25519:" + b64url(b"\x01" * 32) + "=",
    "ed25519:" + base64.b64encode(b"\xfb" * 32).decode(), "ED25519:" + b64url(b"\x01" * 32), "",
])
def test_parse_public_key_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="expected ed25519:"):
        parse_public_key(text, "ed25519")


# -- verified-bundle cache -------------------------------------------------------------------

@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every full verification the cache falls through to."""
    calls: list[str] = []
    real = bundle._checked

    def counting(text: str, *args: Any) -> Any:
        calls.append(text)
        return real(text, *args)

    monkeypatch.setattr(bundle, "_checked", counting)
    return calls


def test_cache_verifies_a_repeated_bundle_once(counted: list[str]) -> None:
    cache = VerifiedBundles()
    first = cache.open(SEALED, recipient=RECIPIENT, trusted_issuers=TRUSTED)
    first["seats"] = 0
    second = cache.open(SEALED, recipient=RECIPIENT, trusted_issuers=TRUSTED)
    assert second == PAYLOAD and len(counted) == 1  # and a caller's mutation did not leak in


def test_cache_does_not_outlive_trust_or_recipient(counted: list[str]) -> None:
    cache = VerifiedBundles()
    cache.open(SEALED, recipient=RECIPIENT, trusted_issuers=TRUSTED)
    for recipient, trusted in [(RECIPIENT, {}), (RECIPIENT, {key_id(ISSUER.public_key()): STRANGER.public_key()}),
                               (OTHER_RECIPIENT, TRUSTED)]:
        with pytest.raises(BundleError):
            cache.open(SEALED, recipient=recipient, trusted_issuers=trusted)


def test_cache_never_stores_failures_and_stays_bounded() -> None:
    cache = VerifiedBundles(maxsize=2)
    with pytest.raises(BundleError):
        cache.open(SEALED[:-50], recipient=RECIPIENT, trusted_issuers=TRUSTED)
    assert len(cache) == 0
    for _ in range(3):
        cache.open(make(), recipient=RECIPIENT, trusted_issuers=TRUSTED)
    assert len(cache) == 2


@pytest.mark.parametrize("text", [None, SEALED + " " * MAX_TEXT_CHARS, "\ud800"])
def test_cache_rejects_bad_input_generically(text: Any) -> None:
    with pytest.raises(BundleError):
        VerifiedBundles().open(text, recipient=RECIPIENT, trusted_issuers=TRUSTED)
