"""WeCom's API on REDESK_WECOM_API_URL: an access token from gettoken, shared by every process
(in Redis when there is one) and refreshed by one at a time; a refused token (40014, 42001,
40001 on a call) is answered by one refresh and one retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from bot.channels.wecom.settings import wecom_settings
from storage.settings import Settings

logger = logging.getLogger(__name__)


#: WeCom error codes redesk acts on.
ERR_SYSTEM_BUSY = -1
ERR_INVALID_SECRET = 40001
ERR_INVALID_CORP = 40013
ERR_INVALID_TOKEN = 40014
ERR_TOKEN_EXPIRED = 42001
ERR_FREQUENCY = 45009
ERR_INVALID_MEDIA = 40007
ERR_NOBODY_VALID = 81013
ERR_NO_SUCH_USER = 60111
ERR_NOT_IN_APP = 60020

#: A call's token was refused: fetched again once.
TOKEN_ERRORS: frozenset[int] = frozenset({ERR_INVALID_SECRET, ERR_INVALID_TOKEN, ERR_TOKEN_EXPIRED})

#: Seconds to wait for one API answer.
TIMEOUT = 10

#: Seconds to wait for user/get while a callback waits to be answered (WeCom waits 5 s).
NAME_TIMEOUT = 2

#: Prefix of the Redis keys of the shared token and of its refresh lock.
TOKEN_PREFIX = "redesk:wecom:token:"


class ApiError(Exception):
    """WeCom answered an errcode (`errcode` None: no JSON answer, e.g. an HTTP 5xx)."""

    def __init__(
        self, errcode: int | None, errmsg: str, answer: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"WeCom {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.answer = answer or {}


class _Memory:
    """The token store of one process without Redis."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, float]] = {}
        self.lock = threading.Lock()

    def get(self, key: str) -> str | None:
        found = self.values.get(key)
        if found is None or found[1] <= time.time():
            return None
        return found[0]

    def set(self, key: str, value: str, ttl: int) -> None:
        self.values[key] = (value, time.time() + ttl)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self.lock:
            yield


class _Shared:
    """The token store in Redis, refreshed under a Redis lock (one process at a time)."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5)

    def get(self, key: str) -> str | None:
        found = self.client.get(key)
        if found is None:
            return None
        return found.decode() if isinstance(found, bytes) else str(found)

    def set(self, key: str, value: str, ttl: int) -> None:
        self.client.set(key, value, ex=ttl)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self.client.lock(f"{TOKEN_PREFIX}lock", timeout=30, blocking_timeout=30):
            yield


class WeComClient:
    """One corp's app on WeCom's API."""

    def __init__(self, settings: Settings) -> None:
        own = wecom_settings(settings)
        self.corp_id = own.corp_id or ""
        self.agent_id = own.agent_id or 0
        self.secret = own.secret or ""
        self.base = f"{own.api_url}/cgi-bin/"
        self.store: _Memory | _Shared = (
            _Shared(settings.redis_url) if settings.redis_url else _Memory()
        )
        self.key = f"{TOKEN_PREFIX}{self.corp_id}:{self.agent_id}"
        self.http = requests.Session()

    def fetch_token(self, used: str | None = None) -> str:
        """A fresh token, unless another thread or process replaced `used` meanwhile.

        Raises:
            ApiError: gettoken refused the corp id or the Secret.
            requests.RequestException: WeCom could not be reached.
        """
        with self.store.locked():
            current = self.store.get(self.key)
            if current and current != used:
                return current
            response = self.http.get(
                f"{self.base}gettoken",
                timeout=TIMEOUT,
                params={"corpid": self.corp_id, "corpsecret": self.secret},
            )
            answer = _json(response)
            token = answer.get("access_token")
            if not isinstance(token, str) or not token:
                raise ApiError(None, "gettoken answered no access_token")
            expires_in = int(answer.get("expires_in") or 7200)
            # Kept a minute less than WeCom's lifetime, so it is replaced before it expires.
            self.store.set(self.key, token, max(expires_in - 60, 60))
            return token

    def token(self) -> str:
        """The shared token (fetched when there is none)."""
        return self.store.get(self.key) or self.fetch_token()

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        raw: bool = False,
        timeout: float = TIMEOUT,
    ) -> Any:
        """One API call with the token; a refused token is fetched again once.

        Returns:
            The JSON answer (errcode 0), or the requests.Response when `raw` and the answer is
            not JSON (media/get's file).

        Raises:
            ApiError, requests.RequestException.
        """
        token = self.token()
        for attempt in (1, 2):
            response = self.http.request(
                method,
                f"{self.base}{path}",
                timeout=timeout,
                params={**(params or {}), "access_token": token},
                json=body,
            )
            if raw and response.ok and "json" not in response.headers.get("Content-Type", ""):
                return response
            try:
                return _json(response)
            except ApiError as exc:
                if exc.errcode in TOKEN_ERRORS and attempt == 1:
                    logger.info(
                        "WeCom refused the access token (%s); fetching a new one", exc.errcode
                    )
                    token = self.fetch_token(used=token)
                    continue
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Closes the connection pool."""
        self.http.close()


def _json(response: requests.Response) -> dict[str, Any]:
    """The answer's JSON when its errcode is 0."""
    try:
        answer = response.json()
    except ValueError:
        raise ApiError(None, f"HTTP {response.status_code}") from None
    if not isinstance(answer, dict):
        raise ApiError(None, f"HTTP {response.status_code}: not an object")
    code = int(answer.get("errcode") or 0)
    if code:
        raise ApiError(code, str(answer.get("errmsg") or ""), answer)
    return answer


_clients: dict[tuple[Any, ...], WeComClient] = {}
_clients_lock = threading.Lock()


def get_client(settings: Settings) -> WeComClient:
    """This process's client for the configured app (made once)."""
    own = wecom_settings(settings)
    key = (own.corp_id, own.agent_id, own.secret, own.api_url, settings.redis_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = WeComClient(settings)
            _clients[key] = client
        return client


def close_clients() -> None:
    """Forgets the clients (tests, shutdown)."""
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
