"""The HTTP side of the neutron provider: an openstacksdk Connection for each auth type,
and :class:`NeutronClient`, which sends every Neutron request through one place that
paces it (token bucket), retries what is safe to retry (bounded, jittered backoff),
records it (:class:`CallStats`) and turns failures into cloudnic errors.

The network endpoint is resolved once (the ``provider.endpoint`` override, else the
Keystone catalog) and requests go to ``<endpoint>/v2.0/...`` through the Connection's
keystoneauth session, so auth, token refresh, TLS and timeouts are openstacksdk's while
no version-discovery round trip is needed.
"""

from __future__ import annotations

import json as _json
import logging
import random
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloudnic.errors import CNIError, InvalidConfig, ProviderError, TryAgainLater

from .auth import AuthGate, auth_error, refused, scrub
from .faults import Fault, classify_transport, translate, transport_error
from .retry import Backoff, TokenBucket
from .settings import NeutronSettings
from .stats import CallStats

log = logging.getLogger("cloudnic.providers.neutron")

# A POST is retried only when Neutron certainly did not act on it.
_POST_RETRY_STATUS = frozenset({429, 503})
_IDEMPOTENT = frozenset({"GET", "PUT", "DELETE", "HEAD"})


def build_connection(settings: NeutronSettings) -> Any:
    """An ``openstack.connection.Connection`` for ``settings.auth_type`` (no network I/O)."""
    with warnings.catch_warnings():
        # openstacksdk 4.x warns about its InfluxDB support on every CloudRegion, configured or not.
        warnings.filterwarnings("ignore", message="Support for InfluxDB")
        return _connection(settings)


def _connection(settings: NeutronSettings) -> Any:
    import openstack
    import openstack.config
    import openstack.connection

    common: dict[str, Any] = {
        "api_timeout": settings.timeout_s,
        "connect_retries": 0,          # NeutronClient retries, with backoff and stats
        "status_code_retries": 0,
        "app_name": "cloudnic",
    }
    if settings.insecure:
        common["verify"] = False
    elif settings.ca_file:
        common["cacert"] = settings.ca_file
    if settings.region_name:
        common["region_name"] = settings.region_name
    if settings.interface:
        common["interface"] = settings.interface
    if settings.endpoint:
        common["network_endpoint_override"] = settings.endpoint
    try:
        if settings.auth_type == "noauth":
            return openstack.connection.Connection(auth_type="none", **common)
        if settings.auth_type == "password":
            auth = {"auth_url": settings.auth_url, "username": settings.username,
                    "password": settings.password.reveal(), "user_domain_name": settings.user_domain_name}
            if settings.project_id:
                auth["project_id"] = settings.project_id
            else:
                auth["project_name"] = settings.project_name
                auth["project_domain_name"] = settings.project_domain_name
            return openstack.connection.Connection(auth_type="password", auth=auth, **common)
        if settings.auth_type == "v3applicationcredential":
            auth = {"auth_url": settings.auth_url,
                    "application_credential_id": settings.application_credential_id,
                    "application_credential_secret": settings.application_credential_secret.reveal()}
            return openstack.connection.Connection(auth_type="v3applicationcredential", auth=auth, **common)
        # "cloud": clouds.yaml (OS_CLIENT_CONFIG_FILE honoured) and OS_* variables
        config = openstack.config.OpenStackConfig(app_name="cloudnic")
        region = config.get_one(cloud=settings.cloud or None, **common)
        return openstack.connection.Connection(config=region)
    except CNIError:
        raise
    except Exception as e:  # openstack.exceptions.ConfigException and friends
        where = f'cloud "{settings.cloud}"' if settings.cloud else f"auth_type {settings.auth_type}"
        # The text of a config error names keys and files, never a secret value.
        raise InvalidConfig(f"provider: cannot build the OpenStack connection for {where}: "
                            f"{scrub(str(e), settings)}") from None


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any               # decoded JSON (dict/list) or None
    fault: Fault | None     # set when status >= 400 (and the caller accepted it)


class NeutronClient:
    """Paced, retried, measured requests to one Neutron API."""

    def __init__(self, settings: NeutronSettings, conn: Any, *, stats: CallStats | None = None,
                 rng: random.Random | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.conn = conn
        self.stats = stats or CallStats()
        self.bucket = TokenBucket(settings.rate_limit_per_s, settings.rate_limit_burst)
        self.backoff = Backoff(settings.backoff_base_s, settings.backoff_max_s, settings.retries)
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.auth = AuthGate(settings, conn, self.bucket, self.backoff, rng=self._rng, sleep=sleep)
        self._lock = threading.Lock()
        self._base: str | None = None

    # ---- endpoint -------------------------------------------------------------

    @property
    def display_endpoint(self) -> str:
        return self._base or self.settings.endpoint or self.settings.auth_url or "(catalog)"

    def base_url(self) -> str:
        """``<network endpoint>/v2.0``; from the override or the catalog (needs a token)."""
        with self._lock:
            if self._base:
                return self._base
        endpoint = self.settings.endpoint or self._endpoint_from_conn()
        base = endpoint.rstrip("/")
        if not base.endswith("/v2.0"):
            base += "/v2.0"
        with self._lock:
            self._base = base
        return base

    def _endpoint_from_conn(self) -> str:
        override = self.conn.config.get_endpoint("network")
        if override:
            return str(override)
        s = self.settings
        try:
            url = self.conn.session.get_endpoint(service_type="network", interface=s.interface or "public",
                                                 region_name=s.region_name or None)
        except Exception as e:
            raise self._auth_error(e, "find the network endpoint in the Keystone catalog") from None
        if not url:
            raise ProviderError(f"provider: the Keystone catalog has no network endpoint for interface "
                                f"{s.interface!r}{f' in region {s.region_name!r}' if s.region_name else ''}; "
                                "set provider.endpoint or provider.region_name/interface")
        return str(url)

    def _auth_error(self, exc: BaseException, doing: str) -> CNIError:
        return auth_error(exc, doing, self.settings, self.conn)

    # ---- requests -------------------------------------------------------------

    def request(self, op: str, method: str, path: str, *, what: str, body: Any = None,
                query: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
                accept: Collection[int] = (), expected: Collection[int] = (), timeout: float | None = None,
                retries: int | None = None) -> Reply:
        """Send one logical request (with retries). Statuses < 400 and those in ``accept``
        (a failure the caller translates itself) or ``expected`` (not a failure, e.g. 404 on
        delete) come back as a :class:`Reply`; every other outcome raises a cloudnic error."""
        from keystoneauth1 import exceptions as ksa

        started = time.monotonic()
        attempts = 0
        kind: str | None = None
        backoff = Backoff(self.backoff.base, self.backoff.cap, self.backoff.retries if retries is None else retries)
        delays = backoff.delays(self._rng)
        try:
            try:        # the token first (cached), so that a Keystone failure names Keystone, not Neutron
                self.auth.ensure(what, retries)
            except CNIError:
                kind = "auth"
                raise
            while True:
                attempts += 1
                if not self.bucket.acquire(self.settings.timeout_s):
                    kind = "rate_limited"
                    raise TryAgainLater(f"{what}: the client-side rate limit for Neutron "
                                        f"({self.settings.rate_limit_per_s:g}/s) is saturated; retry later")
                try:
                    url = self.base_url() + path
                    if query:
                        url += "?" + urllib.parse.urlencode(query, doseq=True)
                    resp = self.conn.session.request(
                        url, method, json=body, raise_exc=False, connect_retries=0,
                        headers={"Accept": "application/json"},
                        timeout=timeout if timeout is not None else self.settings.timeout_s)
                except CNIError:
                    kind = kind or "endpoint"
                    raise
                except (ksa.AuthorizationFailure, ksa.Unauthorized, ksa.MissingAuthPlugin,
                        ksa.EndpointNotFound, ksa.DiscoveryFailure) as e:
                    kind = "auth"     # a token (re)fetched inside the request: a 401 starts the back-off too
                    raise (self.auth.refuse(e, what) if refused(e) else self._auth_error(e, what)) from None
                except ksa.ConnectionError as e:
                    kind, never_sent = classify_transport(e)
                    if method in _IDEMPOTENT or never_sent:
                        delay = next(delays, None)
                        if delay is not None:
                            log.debug("neutron %s %s: %s, retrying in %.2fs", method, path, kind, delay)
                            self._sleep(delay)
                            continue
                    raise transport_error(e, kind, what=what, endpoint=self.display_endpoint) from None
                except ksa.ClientException as e:
                    kind = "auth"
                    raise self._auth_error(e, what) from None
                status = int(resp.status_code)
                if status < 400 or status in accept or status in expected:
                    fault = None if status < 400 else self._fault(resp)
                    kind = None
                    if fault is not None and status not in expected:
                        kind = fault.type or f"http_{status}"
                    return Reply(status=status, body=_decode(resp), fault=fault)
                fault = self._fault(resp)
                kind = fault.type or f"http_{status}"
                if fault.retryable and (method in _IDEMPOTENT or status in _POST_RETRY_STATUS):
                    delay = next(delays, None)
                    if delay is not None:
                        delay = max(delay, _retry_after(resp, backoff.cap))
                        log.debug("neutron %s %s: HTTP %d, retrying in %.2fs", method, path, status, delay)
                        self._sleep(delay)
                        continue
                raise translate(fault, what=what, endpoint=self.display_endpoint, project=self.settings.project_id)
        finally:
            self.stats.record(op, time.monotonic() - started, error=kind, retries=attempts - 1)

    @staticmethod
    def _fault(resp: Any) -> Fault:
        rid = resp.headers.get("X-Openstack-Request-Id", "") if resp.headers is not None else ""
        return Fault.parse(int(resp.status_code), resp.text or "", rid)


def _decode(resp: Any) -> Any:
    if not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:
        try:
            return _json.loads(resp.text)
        except ValueError:
            return None


def _retry_after(resp: Any, cap: float) -> float:
    value = resp.headers.get("Retry-After") if resp.headers is not None else None
    try:
        return min(cap, max(0.0, float(value))) if value else 0.0
    except ValueError:
        return 0.0
