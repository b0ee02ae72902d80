"""Getting a Keystone token without hammering Keystone.

Every Neutron request first asks the Connection's session for its auth headers; when no
valid token is cached that is a ``POST /v3/auth/tokens``. :class:`AuthGate` puts that
token request through the same client-side rate limit as the API calls, retries it with
jittered exponential backoff when Keystone is unreachable or failing (5xx), and, when
Keystone refuses the credentials (HTTP 401), sends them again only after a back-off
period (exponential in the refusals in a row, capped, with jitter): a wrong password
re-sent on every call would lock the account out where Keystone has lockout enabled.
During the period every call fails at once with an error that names the auth URL, the
user or application credential id (never a secret) and when the next attempt is due.
A new provider (the agent restarted or its config reloaded) starts with a clean slate.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cloudnic.errors import CNIError, ProviderError, TryAgainLater

from .faults import exception_chain
from .retry import Backoff, TokenBucket
from .settings import NeutronSettings

log = logging.getLogger("cloudnic.providers.neutron")


def scrub(text: str, settings: NeutronSettings) -> str:
    """``text`` without the settings' secrets."""
    for secret in (settings.password, settings.application_credential_secret):
        if secret:
            text = text.replace(secret.reveal(), "***")
    return text


def identity(settings: NeutronSettings, conn: Any = None) -> str:
    """Who authenticates, for messages: the user or application credential id, never a secret."""
    if settings.auth_type == "password":
        return f'user "{settings.username}" (domain {settings.user_domain_name})'
    if settings.auth_type == "v3applicationcredential":
        return f"application credential {settings.application_credential_id}"
    if settings.auth_type == "cloud":
        who = ""
        try:
            args = conn.config.get_auth_args() if conn is not None else {}
            if args.get("application_credential_id"):
                who = f", application credential {args['application_credential_id']}"
            elif args.get("username"):
                who = f', user "{args["username"]}"'
        except Exception:       # a clouds.yaml without auth args: the cloud's name says enough
            pass
        return f'cloud "{settings.cloud or "(default)"}"{who}'
    return "noauth"


def auth_error(exc: BaseException, doing: str, settings: NeutronSettings, conn: Any = None) -> CNIError:
    """The cloudnic error for a keystoneauth failure while trying to ``doing``."""
    from keystoneauth1 import exceptions as ksa

    where = settings.auth_url or "Keystone"
    text = scrub(str(exc), settings)
    # keystoneauth wraps a refused connection (DiscoveryFailure, ...): look down the chain
    for e in exception_chain(exc):
        if isinstance(e, ksa.ConnectionError) and not isinstance(e, ksa.SSLError):
            return TryAgainLater(f"provider: cannot reach {where} to {doing}; is Keystone up?", text)
        if isinstance(e, ksa.HttpError) and (e.http_status or 0) >= 500:
            return TryAgainLater(f"provider: {where} failed while trying to {doing}; retry later", text)
    return ProviderError(f"provider: authentication of {identity(settings, conn)} with {where} failed while "
                         f"trying to {doing}; check the provider's auth settings (user, domain, project, secret "
                         "file)", text)


def refused(exc: BaseException) -> bool:
    from keystoneauth1 import exceptions as ksa

    return any(isinstance(e, ksa.Unauthorized) for e in exception_chain(exc))


def _transient(err: CNIError) -> bool:
    return isinstance(err, TryAgainLater)


class AuthGate:
    """The token request of one provider: paced, retried, and held back after a 401."""

    def __init__(self, settings: NeutronSettings, conn: Any, bucket: TokenBucket, backoff: Backoff, *,
                 rng: random.Random | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.conn = conn
        self.bucket = bucket
        self.backoff = backoff
        self.refusal = Backoff(settings.auth_backoff_base_s, settings.auth_backoff_max_s, 0)
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._refusals = 0              # 401s in a row
        self._until = 0.0               # clock() before which no token request is sent
        self._last = ""                 # the last refusal's text (scrubbed), for the fail-fast error
        self.token_requests = 0         # attempts made through the gate (tests, metrics)

    @property
    def enabled(self) -> bool:
        return self.settings.auth_type != "noauth"

    def blocked_for(self) -> float:
        """Seconds until the next token request may be sent (0 when it may be sent now)."""
        with self._lock:
            return max(0.0, self._until - self._clock())

    def reset(self) -> None:
        """Forget earlier refusals (new credentials)."""
        with self._lock:
            self._refusals, self._until, self._last = 0, 0.0, ""

    def ensure(self, what: str, retries: int | None = None) -> None:
        """Make sure the session has a token (fetching one if needed); raise a cloudnic error otherwise."""
        if not self.enabled:
            return
        from keystoneauth1 import exceptions as ksa

        delays = Backoff(self.backoff.base, self.backoff.cap,
                         self.backoff.retries if retries is None else retries).delays(self._rng)
        while True:
            self._check_blocked(what)
            fetch = self._needs_token()
            if fetch and not self.bucket.acquire(self.settings.timeout_s):
                raise TryAgainLater(f"{what}: the client-side rate limit for OpenStack "
                                    f"({self.settings.rate_limit_per_s:g}/s) is saturated; retry later")
            try:
                if fetch:
                    self.token_requests += 1
                self.conn.session.get_auth_headers()
            except ksa.ClientException as e:
                if refused(e):
                    raise self.refuse(e, what) from None
                err = auth_error(e, what, self.settings, self.conn)
                delay = next(delays, None) if _transient(err) else None
                if delay is None:
                    raise err from None
                log.debug("token request failed, retrying", extra={"error": err.msg, "delay_s": round(delay, 2)})
                self._sleep(delay)
                continue
            with self._lock:
                self._refusals, self._until, self._last = 0, 0.0, ""
            return

    def _needs_token(self) -> bool:
        """True when getting the auth headers will ask Keystone (no valid token cached)."""
        auth = getattr(self.conn.session, "auth", None)
        if auth is None or not hasattr(auth, "get_access"):
            return False
        needs = getattr(auth, "_needs_reauthenticate", None)
        try:
            return bool(getattr(auth, "auth_ref", None) is None or (needs is not None and needs()))
        except Exception:
            return True

    def _check_blocked(self, what: str) -> None:
        with self._lock:
            left = self._until - self._clock()
            last = self._last
        if left > 0:
            raise ProviderError(self._message(what, left), last)

    def refuse(self, exc: BaseException, what: str) -> CNIError:
        with self._lock:
            self._refusals += 1
            delay = self.refusal.delay(self._refusals - 1, self._rng)
            self._until = self._clock() + delay
            self._last = scrub(str(exc), self.settings)
            last = self._last
        log.error("Keystone refused the credentials; not sending them again before the back-off ends",
                  extra={"auth_url": self.settings.auth_url, "who": identity(self.settings, self.conn),
                         "refusals": self._refusals, "retry_in_s": round(delay, 1)})
        return ProviderError(self._message(what, delay, refused_now=True), last)

    def _message(self, what: str, left: float, refused_now: bool = False) -> str:
        at = datetime.fromtimestamp(self._wall() + left, UTC).strftime("%H:%M:%S UTC")
        how = "refused" if refused_now else "refused earlier"
        return (f"{what}: authentication failed: Keystone at {self.settings.auth_url or '(clouds.yaml)'} {how} the "
                f"credentials of {identity(self.settings, self.conn)} (HTTP 401); to avoid locking the account they "
                f"are not sent again before {at} (in {left:.0f}s); fix the provider's auth settings or secret file and "
                "restart or reload the agent to retry now")


__all__ = ["AuthGate", "auth_error", "identity", "refused", "scrub"]
