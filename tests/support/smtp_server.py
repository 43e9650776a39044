"""A real SMTP server for otpgate's tests (aiosmtpd).

usage: smtp_server.py PORT OUTDIR MODE [CERT KEY]
MODE: plain | starttls | tls. Accepts AUTH as mailer / s3cret. Each message is written
to OUTDIR as <n>.eml with the envelope in X-Envelope-* headers. Prints READY when
listening; exits when its standard input closes. Recipients whose local part starts with
"hidden." are refused as a real server does: `550 5.1.1 <address>: ... User unknown`.
"""
import os
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, outdir, implicit_tls):
        self.outdir = outdir
        self.implicit_tls = implicit_tls

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@", 1)[0].lower().startswith("hidden."):
            return (
                f"550 5.1.1 <{address}>: Recipient address rejected: "
                f"User unknown in virtual mailbox table ({address.split('@', 1)[0]})"
            )
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(self.outdir, f"{time.time_ns()}.eml")
        header = (
            f"X-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {','.join(envelope.rcpt_tos)}\r\n"
            f"X-Authenticated: {session.authenticated}\r\n"
            f"X-TLS: {self.implicit_tls or session.ssl is not None}\r\n"
        ).encode()
        with open(name + ".tmp", "wb") as f:
            f.write(header + envelope.original_content)
        os.rename(name + ".tmp", name)
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"mailer"
        and auth_data.password == b"s3cret"
    )
    return AuthResult(success=ok)


def main():
    port, outdir, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    context = None
    if mode in ("starttls", "tls"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[4], sys.argv[5])
    kwargs = dict(
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        # Implicit TLS is not seen as TLS by aiosmtpd's AUTH check; it is TLS all the same.
        auth_require_tls=(mode == "starttls"),
    )
    if mode == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    elif mode == "tls":
        kwargs.update(ssl_context=context)
    controller = Controller(Handler(outdir, mode == "tls"), **kwargs)
    controller.start()
    print("READY", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
