"""Server-side TLS and mTLS (SPEC §3): a context that reloads without a restart, and peer identity.

Reload design. The server keeps the one ``SSLContext`` it was started with, so reloading must
work through that object. Loading into it is not enough: ``load_verify_locations`` only *adds*
CAs, so a rotated-out CA would stay trusted. Instead the started context is a dispatcher whose
SNI callback (which OpenSSL runs on every handshake, with or without a server name) moves the
connection to the context built by the latest :meth:`ServerTLS.reload`. OpenSSL then takes the
certificate chain and the trust store for client verification from that context.

A resumed session skips certificate verification, and the session cache lives in the
dispatcher, so a session from before a reload could outlive the CA that authenticated it.
Hence no session tickets at all (TLS 1.3 then has no resumption), and a TLS 1.2 session-id
resumption of a session created before the latest reload is refused with a handshake alert;
the client drops that session and its next connection makes a full handshake. Sessions carry
whole-second timestamps, so a session created in the very second of a reload is refused too.
"""
from __future__ import annotations

import functools
import ipaddress
import os
import socket
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID


class TLSConfigError(ValueError):
    """A certificate, key or CA file cannot be loaded; the message names the file."""


class PeerIdentityError(ValueError):
    """The peer presented no certificate, or one that does not name exactly one identity."""


class ServerTLS:
    """TLS for the gateway's listener; ``client_ca_path`` turns on mTLS (``CERT_REQUIRED``).

    Pass :attr:`context` to the server once. :meth:`reload` (or :meth:`reload_if_changed`, cheap
    enough to poll every few seconds) swaps certificate, key and client CA for new connections;
    established connections keep what they negotiated. A failed reload raises and leaves the
    previous configuration serving.
    """

    def __init__(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                 client_ca_path: str | os.PathLike[str] | None = None) -> None:
        self.cert_path = Path(cert_path)
        self.key_path = Path(key_path)
        self.client_ca_path = Path(client_ca_path) if client_ca_path else None
        self._stamp = self._files_stamp()
        self._active = self._build()
        self._reloaded_at: int | None = None  # whole seconds, like SSLSession.time
        self.context = self._build()
        self.context.sni_callback = self._dispatch

    def reload(self) -> None:
        """Re-read all files now; new handshakes use them once this returns."""
        self._stamp = self._files_stamp()
        self._active = self._build()
        self._reloaded_at = int(time.time())

    def reload_if_changed(self) -> bool:
        """Reload when any file's mtime, size or inode changed; True when it did reload.

        A failed attempt is not retried until the files change again, so a poller does not
        report the same broken file every tick; a half-written pair is picked up once complete.
        """
        if self._files_stamp() == self._stamp:
            return False
        self.reload()
        return True

    def _dispatch(self, ssl_object: ssl.SSLObject, server_name: str | None,
                  context: ssl.SSLContext) -> int | None:
        if (self._reloaded_at is not None and ssl_object.session_reused
                and ssl_object.session.time <= self._reloaded_at):
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        ssl_object.context = self._active
        return None

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
        try:
            context.load_cert_chain(self.cert_path, self.key_path)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load TLS certificate {self.cert_path} with key {self.key_path}: {exc}") from None
        if self.client_ca_path is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca_path)
            except (OSError, ssl.SSLError) as exc:
                raise TLSConfigError(f"cannot load client CA {self.client_ca_path}: {exc}") from None
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def _files_stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        paths = [self.cert_path, self.key_path] + ([self.client_ca_path] if self.client_ca_path else [])
        return tuple(_stamp(p) for p in paths)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """The caller identity of an mTLS connection: its certificate's URI SAN, else subject CN.

    In an aiohttp handler: ``peer_identity(request.transport.get_extra_info("ssl_object"))``.
    """
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PeerIdentityError("no client certificate")
    return identity_from_der(der)


@functools.lru_cache(maxsize=1024)
def identity_from_der(der: bytes) -> str:
    """Identity named by a DER certificate; memoised because it runs on every request.

    Several URI SANs are refused rather than picking one: which one the issuer meant is
    ambiguous, and choosing would let one certificate act as several callers.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise PeerIdentityError("client certificate cannot be parsed") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if len(uris) > 1:
        raise PeerIdentityError("client certificate has several URI SANs")
    if uris and uris[0]:
        return uris[0]
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(names) != 1 or not isinstance(names[0], str) or not names[0]:
        raise PeerIdentityError("client certificate has neither one URI SAN nor one subject CN")
    return names[0]


def transport(host: str, tls: bool) -> str:
    """How the listener on ``host`` carries payloads (SPEC §3): ``tls``, ``loopback`` (plaintext
    that never leaves this machine) or ``plaintext`` (license keys in clear on a network).

    A name is loopback only if every address it resolves to is; the wildcard (``""``, ``0.0.0.0``,
    ``::``) and anything unresolvable are not, so a doubt always counts as exposed.
    """
    if tls:
        return "tls"
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host or None, None, proto=socket.IPPROTO_TCP)} \
            if host else set()
    except (socket.gaierror, UnicodeError):
        addresses = set()
    loopback = bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
    return "loopback" if loopback else "plaintext"
