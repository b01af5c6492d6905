"""The WeCom client on wechatpy's enterprise client, against the fake WeCom API: one token
for every process, one refresh and one retry for a refused token, WeCom's errors as ApiError
and network errors as requests exceptions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from wechatpy.enterprise import WeChatClient

from bot.channels import wecom
from bot.channels.wecom import WeComSettings
from bot.channels.wecom.client import (
    ERR_INVALID_SECRET,
    ERR_NO_SUCH_USER,
    TOKEN_PREFIX,
    ApiError,
    WeComClient,
)
from storage.settings import Settings
from tests.fakes.wecom import FakeWeCom
from tests.utils.settings import make_settings

WORKER = "lisj"


@pytest.fixture
def fake() -> Iterator[FakeWeCom]:
    """The fake WeCom API with one member."""
    server = FakeWeCom().start()
    server.member(WORKER, "李书记")
    try:
        yield server
    finally:
        wecom.close_clients()
        server.stop()
    assert server.errors == []


def settings_for(fake: FakeWeCom, redis_url: str | None = None, **overrides: Any) -> Settings:
    """Settings with the fake's app (no database is used)."""
    values: dict[str, Any] = {
        "corp_id": fake.corp_id,
        "agent_id": fake.agent_id,
        "secret": fake.secret,
        "token": fake.token,
        "aes_key": fake.aes_key,
        "api_url": fake.url,
        **overrides,
    }
    section = WeComSettings(_env_file=None, **values)  # type: ignore[call-arg]
    base = make_settings(database_url="sqlite://", redis_url=redis_url, _env_file=None)
    return base.with_sections(section)


@pytest.fixture
def client(fake: FakeWeCom) -> Iterator[WeComClient]:
    """A client holding its token in this process."""
    made = WeComClient(settings_for(fake))
    try:
        yield made
    finally:
        made.close()


def test_it_is_wechatpys_enterprise_client_on_the_configured_api(
    client: WeComClient, fake: FakeWeCom
) -> None:
    assert isinstance(client, WeChatClient)
    assert client.API_BASE_URL == f"{fake.url}/cgi-bin/"
    # wechatpy's own API classes go where REDESK_WECOM_API_URL says too
    assert client.user.get(WORKER)["name"] == "李书记"
    assert fake.token_fetches == 1


def test_a_token_refused_again_after_the_refresh_is_refreshed_once_and_retried_once(
    client: WeComClient, fake: FakeWeCom
) -> None:
    client.call("GET", "user/get", params={"userid": WORKER})
    fake.fail_next(2, errcode=40014, paths="user/get")
    with pytest.raises(ApiError) as refused:
        client.call("GET", "user/get", params={"userid": WORKER})
    assert refused.value.errcode == 40014
    assert fake.token_fetches == 2
    # The next call works with the token it has
    assert client.call("GET", "user/get", params={"userid": WORKER})["userid"] == WORKER
    assert fake.token_fetches == 2


@pytest.mark.parametrize("code", [40001, 40014, 42001])
def test_each_refused_token_code_is_answered_by_one_refresh(
    client: WeComClient, fake: FakeWeCom, code: int
) -> None:
    client.call("GET", "user/get", params={"userid": WORKER})
    fake.fail_next(1, errcode=code, paths="user/get")
    assert client.call("GET", "user/get", params={"userid": WORKER})["userid"] == WORKER
    assert fake.token_fetches == 2


def test_an_expired_token_is_replaced(client: WeComClient, fake: FakeWeCom) -> None:
    client.call("GET", "user/get", params={"userid": WORKER})
    fake.expire_tokens()
    assert client.call("GET", "user/get", params={"userid": WORKER})["userid"] == WORKER
    assert fake.token_fetches == 2


def test_a_5xx_is_an_api_error_without_a_code_and_a_network_error_stays_requests(
    client: WeComClient, fake: FakeWeCom
) -> None:
    fake.fail_next(1, status=502, paths="user/get")
    with pytest.raises(ApiError) as failed:
        client.call("GET", "user/get", params={"userid": WORKER})
    assert failed.value.errcode is None and "502" in failed.value.errmsg
    fake.fail_next(1, network=True, paths="user/get")
    with pytest.raises(requests.RequestException):
        client.call("GET", "user/get", params={"userid": WORKER})
    assert fake.token_fetches == 1


def test_an_error_answer_is_an_api_error_with_the_answer(
    client: WeComClient, fake: FakeWeCom
) -> None:
    with pytest.raises(ApiError) as missing:
        client.call("GET", "user/get", params={"userid": "nobody"})
    assert missing.value.errcode == ERR_NO_SUCH_USER
    assert missing.value.answer["errcode"] == ERR_NO_SUCH_USER


def test_a_refused_secret_is_an_api_error_from_gettoken(fake: FakeWeCom) -> None:
    made = WeComClient(settings_for(fake, secret="x" * 43))
    try:
        with pytest.raises(ApiError) as refused:
            made.fetch_token()
        assert refused.value.errcode == ERR_INVALID_SECRET
        with pytest.raises(ApiError):
            made.call("GET", "user/get", params={"userid": WORKER})
    finally:
        made.close()
    assert fake.token_fetches == 0


def test_the_shared_token_is_in_redis_under_redesks_key_without_the_secret(
    fake: FakeWeCom, redis_url: str
) -> None:
    made = WeComClient(settings_for(fake, redis_url))
    try:
        made.call("GET", "user/get", params={"userid": WORKER})
    finally:
        made.close()
    shared = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = list(shared.keys(f"{TOKEN_PREFIX}*"))
        assert keys == [f"{TOKEN_PREFIX}{fake.corp_id}:{fake.agent_id}"]
        assert shared.ttl(keys[0]) > 0
        assert fake.secret[:10] not in keys[0]
    finally:
        shared.close()


def test_a_token_kept_in_the_process_expires_with_its_lifetime(
    client: WeComClient, fake: FakeWeCom
) -> None:
    client.call("GET", "user/get", params={"userid": WORKER})
    client.session.set(client.access_token_key, client.token(), -1)
    client.call("GET", "user/get", params={"userid": WORKER})
    assert fake.token_fetches == 2


def test_a_bare_token_left_in_redis_is_fetched_again_and_stored_over(
    fake: FakeWeCom, redis_url: str
) -> None:
    key = f"{TOKEN_PREFIX}{fake.corp_id}:{fake.agent_id}"
    shared = redis.Redis.from_url(redis_url, decode_responses=True)
    made = WeComClient(settings_for(fake, redis_url))
    try:
        shared.set(key, "not-json-token", ex=600)
        assert made.call("GET", "user/get", params={"userid": WORKER})["userid"] == WORKER
        assert fake.token_fetches == 1
        assert shared.get(key) == f'"{fake.tokens[-1]}"'
    finally:
        made.close()
        shared.close()


def test_processes_refusing_one_stale_token_together_refresh_it_once(
    fake: FakeWeCom, redis_url: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # Given eight processes' clients on one Redis, their shared token revoked
    made = [WeComClient(settings_for(fake, redis_url)) for _ in range(8)]
    try:
        made[0].call("GET", "user/get", params={"userid": WORKER})
        fake.revoke_tokens()
        # When all of them call at once
        with ThreadPoolExecutor(len(made)) as pool:
            answers = list(
                pool.map(lambda one: one.call("GET", "user/get", params={"userid": WORKER}), made)
            )
        # Then every call worked and one new token was fetched for all
        assert [answer["userid"] for answer in answers] == [WORKER] * len(made)
        assert fake.token_fetches == 2
    finally:
        for one in made:
            one.close()
