"""The fake WeChat official account API (tests/fakes/wechat.py), driven by the real wechatpy."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from wechatpy import events, messages, parse_message
from wechatpy.client import WeChatClient
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import (
    APILimitedException,
    InvalidSignatureException,
    WeChatClientException,
)
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature

from tests.fakes.wechat import (
    PNG_MAGIC,
    Callback,
    FakeWeChat,
    ReplyError,
    new_openid,
    qrcode_png,
    random_aes_key,
)
from tests.utils.settings import wechat_of

#: A fixed clock, so CreateTime and timestamps are known.
T0 = 1_700_000_000.0


class FakeClient(WeChatClient):  # type: ignore[misc]
    """wechatpy's client pointed at the fake, as the product has to do it."""

    def __init__(self, fake: FakeWeChat, secret: str | None = None, **kwargs: Any) -> None:
        super().__init__(fake.appid, secret or fake.app_secret, **kwargs)
        self.API_BASE_URL = fake.url + "/cgi-bin/"
        self.token_url = fake.url + "/cgi-bin/token"

    def fetch_access_token(self) -> dict[str, Any]:
        return self._fetch_access_token(  # type: ignore[no-any-return]
            url=self.token_url,
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )


@pytest.fixture
def fake() -> Iterator[FakeWeChat]:
    with FakeWeChat() as server:
        yield server
    assert server.errors == []


@pytest.fixture
def make_client(fake: FakeWeChat) -> Iterator[Callable[..., FakeClient]]:
    clients: list[FakeClient] = []

    def make(secret: str | None = None, **kwargs: Any) -> FakeClient:
        client = FakeClient(fake, secret, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client._http.close()


@pytest.fixture
def client(make_client: Callable[..., FakeClient]) -> FakeClient:
    return make_client()


def errcode_of(call: Callable[[], object]) -> int | None:
    with pytest.raises(WeChatClientException) as info:
        call()
    return info.value.errcode  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- tokens


def test_token_endpoint_answers_like_wechat(fake: FakeWeChat) -> None:
    url = fake.url + "/cgi-bin/token"
    good = {"grant_type": "client_credential", "appid": fake.appid, "secret": fake.app_secret}
    answer = requests.get(url, params=good, timeout=5)
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["expires_in"] == 7200 and len(body["access_token"]) > 100
    assert requests.get(url, params=good, timeout=5).json()["access_token"] != body["access_token"]
    assert fake.token_fetches == 2

    bad_appid = requests.get(url, params={**good, "appid": "wx0"}, timeout=5).json()
    assert bad_appid["errcode"] == 40013
    assert bad_appid["errmsg"].startswith("invalid appid rid: ")
    bad_secret = requests.get(url, params={**good, "secret": "nope"}, timeout=5).json()
    assert bad_secret["errcode"] == 40125
    assert fake.token_fetches == 2
    no_token = requests.get(fake.url + "/cgi-bin/menu/get", timeout=5).json()
    assert no_token["errcode"] == 41001


def test_a_wrong_secret_raises_from_the_first_call(
    fake: FakeWeChat, make_client: Callable[..., FakeClient]
) -> None:
    fake.interacted("o1")
    client = make_client(secret="not-the-secret")
    assert errcode_of(lambda: client.message.send_text("o1", "hi")) == 40125
    assert fake.sent() == []


def test_expired_tokens_are_refreshed_by_wechatpy(fake: FakeWeChat, client: FakeClient) -> None:
    fake.interacted("o1")
    client.message.send_text("o1", "one")
    fake.expire_tokens()
    client.message.send_text("o1", "two")
    assert fake.texts("o1") == ["one", "two"]
    assert fake.token_fetches == 2
    assert [(c.path, c.errcode) for c in fake.calls] == [
        ("token", 0),
        ("message/custom/send", 0),
        ("message/custom/send", 42001),
        ("token", 0),
        ("message/custom/send", 0),
    ]


def test_the_previous_token_works_during_the_grace_period_only(
    fake: FakeWeChat, make_client: Callable[..., FakeClient]
) -> None:
    fake.interacted("o1")
    first, second = make_client(), make_client()
    first.message.send_text("o1", "a")
    second.message.send_text("o1", "b")  # a new token: the first one is now the previous one
    first.message.send_text("o1", "c")
    assert fake.token_fetches == 2
    fake.advance(seconds=301)
    first.message.send_text("o1", "d")  # 40001, wechatpy fetches again and repeats the call
    assert fake.texts("o1") == ["a", "b", "c", "d"]
    assert fake.token_fetches == 3
    assert [c.errcode for c in fake.calls if c.path == "message/custom/send"] == [0, 0, 0, 40001, 0]


def test_an_unknown_token_is_40001(
    fake: FakeWeChat, make_client: Callable[..., FakeClient]
) -> None:
    fake.interacted("o1")
    stale = make_client(access_token="bogus", auto_retry=False)
    assert errcode_of(lambda: stale.message.send_text("o1", "x")) == 40001
    retrying = make_client(access_token="bogus")
    assert retrying.message.send_text("o1", "y") == {"errcode": 0, "errmsg": "ok"}
    assert fake.texts("o1") == ["y"]


def test_tokens_expire_with_the_fake_clock(fake: FakeWeChat, client: FakeClient) -> None:
    fake.interacted("o1")
    client.message.send_text("o1", "a")
    fake.advance(hours=2)
    fake.interacted("o1")
    client.message.send_text("o1", "b")
    assert fake.token_fetches == 2
    assert 42001 in [c.errcode for c in fake.calls]


# --------------------------------------------------------------------------- custom messages


def test_send_text_is_recorded(fake: FakeWeChat, client: FakeClient) -> None:
    fake.text("o1", "我家门口路灯坏了")
    assert client.message.send_text("o1", "已收到") == {"errcode": 0, "errmsg": "ok"}
    assert fake.texts("o1") == ["已收到"]
    assert fake.texts("o2") == []
    call = fake.sent("o1")[0]
    assert (call.method, call.path, call.errcode, call.ok) == (
        "POST",
        "message/custom/send",
        0,
        True,
    )
    assert call.body == {"touser": "o1", "msgtype": "text", "text": {"content": "已收到"}}
    assert call.params["access_token"] in fake.tokens
    assert call.response == {"errcode": 0, "errmsg": "ok"}
    assert call.openid == "o1"
    assert fake.count("message/custom/send") == 1


def test_other_custom_message_types(fake: FakeWeChat, client: FakeClient) -> None:
    image = fake.image("o1")
    client.message.send_image("o1", image.media_id)
    client.message.send_link("o1", {"title": "t", "description": "d", "url": "https://x.cn"})
    client.message.send_articles(
        "o1",
        [{"title": "t", "description": "d", "url": "https://x.cn", "image": "https://x.cn/a.jpg"}],
    )
    assert [c.body["msgtype"] for c in fake.sent("o1")] == ["image", "link", "news"]
    assert fake.texts("o1") == []
    assert errcode_of(lambda: client.message.send_voice("o1", "no-such-media")) == 40007
    two = [{"title": "t", "description": "d", "url": "https://x.cn"}] * 2
    assert errcode_of(lambda: client.message.send_articles("o1", two)) == 45008
    assert (
        errcode_of(
            lambda: client.post(
                "message/custom/send",
                data={"touser": "o1", "msgtype": "telepathy", "telepathy": {}},
            )
        )
        == 40008
    )


def test_the_48_hour_window(fake: FakeWeChat, client: FakeClient) -> None:
    fake.text("o1", "hello")
    client.message.send_text("o1", "within")
    fake.advance(hours=49)
    assert errcode_of(lambda: client.message.send_text("o1", "too late")) == 45015
    assert fake.texts("o1") == ["within"]
    fake.text("o1", "me again")
    client.message.send_text("o1", "reopened")
    assert fake.texts("o1") == ["within", "reopened"]


def test_interacted_at_a_given_time(fake: FakeWeChat, client: FakeClient) -> None:
    fake.interacted("o1", at=fake.now() - 47 * 3600)
    client.message.send_text("o1", "still in")
    fake.interacted("o1", at=fake.now() - 48 * 3600 - 1)
    assert errcode_of(lambda: client.message.send_text("o1", "out")) == 45015


def test_five_messages_per_interaction(fake: FakeWeChat, client: FakeClient) -> None:
    fake.text("o1", "hello")
    for n in range(5):
        client.message.send_text("o1", f"m{n}")
    assert errcode_of(lambda: client.message.send_text("o1", "m5")) == 45047
    fake.event("o1", "CLICK", key="MENU_STATUS")  # a menu click is an interaction
    client.message.send_text("o1", "m6")
    assert fake.texts("o1") == ["m0", "m1", "m2", "m3", "m4", "m6"]


def test_unknown_and_unsubscribed_users(fake: FakeWeChat, client: FakeClient) -> None:
    assert errcode_of(lambda: client.message.send_text(new_openid(), "x")) == 40003
    fake.text("o1", "hi")
    fake.event("o1", "unsubscribe")
    with pytest.raises(WeChatClientException) as info:
        client.message.send_text("o1", "x")
    assert info.value.errcode == 43004
    assert info.value.errmsg.startswith("require subscribe")
    fake.event("o1", "subscribe")
    client.message.send_text("o1", "welcome back")
    fake.unsubscribe("o1")
    assert errcode_of(lambda: client.message.send_text("o1", "y")) == 43004
    assert fake.texts() == ["welcome back"]


def test_view_and_location_events_do_not_open_the_window(
    fake: FakeWeChat, client: FakeClient
) -> None:
    fake.event("o1", "VIEW", key="https://example.cn/page")
    fake.event("o1", "LOCATION", latitude=23.1, longitude=113.3, precision=50.0)
    assert errcode_of(lambda: client.message.send_text("o1", "x")) == 45015
    fake.follower("o2")
    assert errcode_of(lambda: client.message.send_text("o2", "x")) == 45015


def test_text_length_limit(fake: FakeWeChat, client: FakeClient) -> None:
    fake.interacted("o1")
    client.message.send_text("o1", "字" * 2048)
    assert errcode_of(lambda: client.message.send_text("o1", "字" * 2049)) == 45002
    assert errcode_of(lambda: client.message.send_text("o1", "")) == 44004
    assert [len(t) for t in fake.texts("o1")] == [2048]


def test_errmsg_without_rid() -> None:
    with FakeWeChat(rid=False) as fake:
        answer = requests.get(
            fake.url + "/cgi-bin/token",
            timeout=5,
            params={"grant_type": "client_credential", "appid": "wx0", "secret": "x"},
        )
        assert answer.json() == {"errcode": 40013, "errmsg": "invalid appid"}
    assert fake.errors == []


# --------------------------------------------------------------------------- templates


def test_template_messages(fake: FakeWeChat, client: FakeClient) -> None:
    fake.template("TPL1", fields=["first", "keyword1", "keyword2", "remark"])
    fake.follower("o1")  # no interaction needed for templates
    data = {
        "first": {"value": "您的诉求有新进展"},
        "keyword1": {"value": "SQ-20261122-0001"},
        "keyword2": {"value": "已办结", "color": "#173177"},
        "remark": {"value": "请评价"},
    }
    result = client.message.send_template("o1", "TPL1", data, url="https://example.cn/r/1")
    assert result["errcode"] == 0 and isinstance(result["msgid"], int)
    fake.advance(hours=49)  # not subject to the 48-hour window
    client.message.send_template("o1", "TPL1", data)
    sent = fake.templates("o1")
    assert [c.body.get("url") for c in sent] == ["https://example.cn/r/1", None]
    assert sent[0].body["data"]["keyword1"]["value"] == "SQ-20261122-0001"
    assert sent[0].response is not None and sent[1].response is not None
    assert sent[1].response["msgid"] > sent[0].response["msgid"]

    missing = {k: v for k, v in data.items() if k != "keyword2"}
    with pytest.raises(WeChatClientException) as info:
        client.message.send_template("o1", "TPL1", missing)
    assert info.value.errcode == 47003
    assert "data.keyword2.value is empty" in info.value.errmsg
    assert errcode_of(lambda: client.message.send_template("o1", "NOPE", data)) == 40037
    assert errcode_of(lambda: client.message.send_template("o9", "TPL1", data)) == 40003
    fake.unsubscribe("o1")
    assert errcode_of(lambda: client.message.send_template("o1", "TPL1", data)) == 43004
    assert len(fake.templates()) == 2
    assert fake.sent() == []


def test_new_style_template_fields_are_length_checked(fake: FakeWeChat, client: FakeClient) -> None:
    fake.template("NEW", fields=["character_string1", "thing2"])
    fake.follower("o1")
    ok = {"character_string1": {"value": "SQ-20261122-0001"}, "thing2": {"value": "路灯" * 10}}
    client.message.send_template("o1", "NEW", ok)
    long = {**ok, "thing2": {"value": "路灯" * 10 + "坏"}}
    with pytest.raises(WeChatClientException) as info:
        client.message.send_template("o1", "NEW", long)
    assert info.value.errcode == 47003 and "data.thing2.value invalid" in info.value.errmsg
    assert len(fake.templates("o1")) == 1


# --------------------------------------------------------------------------- menu


MENU = {
    "button": [
        {"type": "click", "name": "我的诉求", "key": "MY_REQUESTS"},
        {"type": "view", "name": "网页", "url": "https://example.cn/desk"},
        {
            "name": "更多",
            "sub_button": [
                {"type": "click", "name": "帮助", "key": "HELP"},
                {"type": "view", "name": "服务中心简介", "url": "https://example.cn/about"},
            ],
        },
    ]
}


def test_menu_create_get_delete(fake: FakeWeChat, client: FakeClient) -> None:
    assert client.menu.get() is None  # 46003, which wechatpy turns into None
    assert client.menu.create(MENU) == {"errcode": 0, "errmsg": "ok"}
    assert fake.menu == MENU
    assert client.menu.get() == {"menu": MENU}
    client.menu.delete()
    assert fake.menu is None


@pytest.mark.parametrize(
    ("menu", "errcode"),
    [
        ({"button": []}, 40016),
        ({"button": [MENU["button"][0]] * 4}, 40016),
        ({"button": [{"type": "click", "name": "x"}]}, 40019),
        ({"button": [{"type": "view", "name": "x"}]}, 40020),
        ({"button": [{"type": "bogus", "name": "x", "key": "k"}]}, 40017),
        ({"button": [{"type": "click", "key": "k"}]}, 40018),
        ({"button": [{"type": "click", "name": "一二三四五六", "key": "k"}]}, 40018),
        ({"button": [{"name": "x", "sub_button": []}]}, 40023),
        (
            {
                "button": [
                    {"name": "x", "sub_button": [{"type": "click", "name": "y", "key": "k"}] * 6}
                ]
            },
            40023,
        ),
        ({"button": [{"name": "x", "sub_button": [{"type": "view", "name": "y"}]}]}, 40027),
        ({"button": [{"name": "x", "sub_button": [{"type": "bogus", "name": "y"}]}]}, 40024),
        ({"button": [{"name": "x", "sub_button": [{"name": "y", "sub_button": []}]}]}, 40022),
    ],
)
def test_menu_validation(
    fake: FakeWeChat, client: FakeClient, menu: dict[str, Any], errcode: int
) -> None:
    assert errcode_of(lambda: client.menu.create(menu)) == errcode
    assert fake.menu is None


# --------------------------------------------------------------------------- media


def test_media_download(fake: FakeWeChat, client: FakeClient) -> None:
    image = fake.image("o1")
    assert image.media_id is not None
    response = client.media.download(image.media_id)
    assert isinstance(response, requests.Response)
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.content == fake.media_bytes(image.media_id)
    assert response.content.startswith(b"\xff\xd8")
    pic_url = parse_message(image.xml).image
    assert requests.get(pic_url, timeout=5).content == response.content

    fake.media("VOICE1", b"#!AMR\n1234", content_type="audio/amr")
    voice = client.media.download("VOICE1")
    assert (voice.headers["Content-Type"], voice.content) == ("audio/amr", b"#!AMR\n1234")

    assert errcode_of(lambda: client.media.download("unknown")) == 40007
    unknown = requests.get(
        fake.url + "/cgi-bin/media/get",
        timeout=5,
        params={"access_token": fake.tokens[-1], "media_id": "unknown"},
    )
    assert unknown.headers["Content-Type"].startswith("application/json")
    assert unknown.json()["errcode"] == 40007

    fake.advance(days=3, seconds=1)
    assert errcode_of(lambda: client.media.download(image.media_id)) == 40007


def test_video_media_answers_a_video_url(fake: FakeWeChat, client: FakeClient) -> None:
    video = fake.video("o1")
    assert video.media_id is not None
    answer = client.media.download(video.media_id)
    assert isinstance(answer, dict) and set(answer) == {"video_url"}
    content = requests.get(answer["video_url"], timeout=5).content
    assert content == fake.media_bytes(video.media_id)
    thumb = parse_message(video.xml).thumb_media_id
    assert client.media.download(thumb).headers["Content-Type"] == "image/jpeg"


# --------------------------------------------------------------------------- QR codes


def show_qrcode(fake: FakeWeChat, ticket: str) -> requests.Response:
    """GET showqrcode?ticket=... (no access token, like WeChat)."""
    return requests.get(f"{fake.url}/cgi-bin/showqrcode", params={"ticket": ticket}, timeout=5)


def test_a_permanent_string_scene_qrcode_answers_a_ticket_and_its_image(
    fake: FakeWeChat, client: FakeClient
) -> None:
    # When a permanent QR code of a string scene is made twice
    body = {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "cbd"}}}
    first = client.qrcode.create(body)
    second = client.qrcode.create(body)

    # Then WeChat's answer has a ticket and the code's url, no lifetime, the same both times
    assert set(first) == {"ticket", "url"}
    assert first == second
    assert first["url"].startswith("http://weixin.qq.com/q/")
    # And showqrcode serves the code's PNG for the ticket
    image = show_qrcode(fake, first["ticket"])
    assert image.status_code == 200
    assert image.headers["Content-Type"] == "image/png"
    assert image.content.startswith(PNG_MAGIC)
    assert image.content == qrcode_png(first["url"])
    code = fake.qrcode_of("cbd")
    assert code is not None and (code.ticket, code.expires_at) == (first["ticket"], None)


def test_a_temporary_qrcode_has_a_lifetime_and_its_ticket_expires(
    fake: FakeWeChat, client: FakeClient
) -> None:
    # Given a temporary QR code valid for 60 seconds
    answer = client.qrcode.create(
        {"expire_seconds": 60, "action_name": "QR_SCENE", "action_info": {"scene": {"scene_id": 7}}}
    )
    assert answer["expire_seconds"] == 60
    assert show_qrcode(fake, answer["ticket"]).status_code == 200

    # When the time passes
    fake.advance(61)

    # Then its ticket shows nothing, and an unknown ticket neither
    assert show_qrcode(fake, answer["ticket"]).status_code == 404
    assert show_qrcode(fake, "nothing").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "x" * 65}}},
        {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": ""}}},
        {"action_name": "QR_LIMIT_SCENE", "action_info": {"scene": {"scene_id": 100_001}}},
        {"action_name": "QR_PERMANENT", "action_info": {"scene": {"scene_str": "x"}}},
        {"action_name": "QR_LIMIT_STR_SCENE"},
    ],
    ids=["scene too long", "empty scene", "scene id too big", "unknown action", "no scene"],
)
def test_bad_qrcode_arguments_are_40097(
    fake: FakeWeChat, client: FakeClient, body: dict[str, Any]
) -> None:
    assert errcode_of(lambda: client.qrcode.create(body)) == 40097
    assert fake.qrcodes == {}


# --------------------------------------------------------------------------- limits and faults


def test_frequency_limit(fake: FakeWeChat, client: FakeClient) -> None:
    fake.interacted("o1")
    fake.limit(2)
    client.message.send_text("o1", "a")
    client.message.send_text("o1", "b")
    with pytest.raises(APILimitedException) as info:
        client.message.send_text("o1", "c")
    assert info.value.errcode == 45009
    fake.limit(None)
    client.message.send_text("o1", "d")
    assert fake.texts("o1") == ["a", "b", "d"]


def test_http_500(fake: FakeWeChat, client: FakeClient) -> None:
    fake.interacted("o1")
    fake.fail_next(1)
    with pytest.raises(WeChatClientException) as info:
        client.message.send_text("o1", "lost")
    assert info.value.errcode is None and info.value.errmsg is None
    assert info.value.response.status_code == 500
    assert not isinstance(info.value, APILimitedException)
    client.message.send_text("o1", "kept")
    assert fake.texts("o1") == ["kept"]
    failed = [c for c in fake.calls if c.status == 500]
    assert len(failed) == 1 and failed[0].errcode is None and not failed[0].ok


def test_system_busy(fake: FakeWeChat, client: FakeClient) -> None:
    fake.interacted("o1")
    fake.fail_next(2, errcode=-1)
    for _ in range(2):
        with pytest.raises(WeChatClientException) as info:
            client.message.send_text("o1", "busy")
        assert info.value.errcode == -1
        assert not isinstance(info.value, APILimitedException)
        assert info.value.errmsg.startswith("system error")
    client.message.send_text("o1", "done")
    assert fake.texts("o1") == ["done"]


def test_faults_on_the_token_endpoint(fake: FakeWeChat, client: FakeClient) -> None:
    fake.interacted("o1")
    fake.fail_next(1, paths="token")
    with pytest.raises(WeChatClientException) as info:
        client.message.send_text("o1", "x")
    assert info.value.errcode is None
    client.message.send_text("o1", "y")
    assert fake.texts("o1") == ["y"] and fake.token_fetches == 1


def test_delay_next_delivers_although_the_client_times_out(
    fake: FakeWeChat, make_client: Callable[..., FakeClient]
) -> None:
    fake.interacted("o1")
    client = make_client(timeout=0.2)
    client.fetch_access_token()
    fake.delay_next(1, 1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.message.send_text("o1", "slow")
    assert fake.wait_for(lambda f: f.texts("o1") == ["slow"])


def test_concurrent_clients(fake: FakeWeChat, make_client: Callable[..., FakeClient]) -> None:
    users = [f"o{n}" for n in range(8)]
    for user in users:
        fake.interacted(user)
    clients = [make_client() for _ in users]

    def run(client: FakeClient, user: str) -> None:
        for n in range(3):
            client.message.send_text(user, f"{user}-{n}")

    threads = [threading.Thread(target=run, args=pair) for pair in zip(clients, users, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(fake.sent()) == 24
    for user in users:
        assert fake.texts(user) == [f"{user}-{n}" for n in range(3)]


# --------------------------------------------------------------------------- callbacks


@pytest.fixture
def fixed() -> FakeWeChat:
    """A fake that is not started, with a fixed clock (builders do not need the server)."""
    return FakeWeChat(clock=lambda: T0)


BUILDERS: list[tuple[str, Callable[[FakeWeChat], Callback], type, dict[str, Any]]] = [
    (
        "text",
        lambda f: f.text("o1", "小区门口的路灯坏了 <b>&amp; ]]> x"),
        messages.TextMessage,
        {"content": "小区门口的路灯坏了 <b>&amp; ]]> x"},
    ),
    (
        "image",
        lambda f: f.image("o1", media_id="IMG1", pic_url="http://mmbiz.qpic.cn/a/0"),
        messages.ImageMessage,
        {"media_id": "IMG1", "image": "http://mmbiz.qpic.cn/a/0"},
    ),
    (
        "voice",
        lambda f: f.voice("o1", recognition="路灯坏了", media_id="V1"),
        messages.VoiceMessage,
        {"media_id": "V1", "format": "amr", "recognition": "路灯坏了"},
    ),
    (
        "voice without recognition",
        lambda f: f.voice("o1", media_id="V2"),
        messages.VoiceMessage,
        {"media_id": "V2", "recognition": None},
    ),
    (
        "video",
        lambda f: f.video("o1", media_id="VID1"),
        messages.VideoMessage,
        {"media_id": "VID1"},
    ),
    (
        "shortvideo",
        lambda f: f.shortvideo("o1", media_id="SV1"),
        messages.ShortVideoMessage,
        {"media_id": "SV1"},
    ),
    (
        "location",
        lambda f: f.location("o1", 23.134521, 113.358803, "广州市天河区", scale=20),
        messages.LocationMessage,
        {"location": ("23.134521", "113.358803"), "scale": "20", "label": "广州市天河区"},
    ),
    (
        "link",
        lambda f: f.link("o1", "标题", "描述", "https://example.cn/a?b=1&c=2"),
        messages.LinkMessage,
        {"title": "标题", "description": "描述", "url": "https://example.cn/a?b=1&c=2"},
    ),
    ("subscribe", lambda f: f.event("o1", "subscribe"), events.SubscribeEvent, {"key": ""}),
    (
        "subscribe by QR code",
        lambda f: f.event("o1", "subscribe", key="qrscene_42", ticket="T"),
        events.SubscribeScanEvent,
        {"scene_id": "42", "ticket": "T"},
    ),
    ("unsubscribe", lambda f: f.event("o1", "unsubscribe"), events.UnsubscribeEvent, {}),
    (
        "scan",
        lambda f: f.event("o1", "scan", key="42", ticket="T"),
        events.ScanEvent,
        {"scene_id": "42", "ticket": "T"},
    ),
    (
        "click",
        lambda f: f.event("o1", "click", key="MY_REQUESTS"),
        events.ClickEvent,
        {"key": "MY_REQUESTS"},
    ),
    (
        "view",
        lambda f: f.event("o1", "VIEW", key="https://example.cn/desk"),
        events.ViewEvent,
        {"url": "https://example.cn/desk"},
    ),
    (
        "location event",
        lambda f: f.event(
            "o1", "LOCATION", latitude=23.137466, longitude=113.352425, precision=119.385040
        ),
        events.LocationEvent,
        {"latitude": 23.137466, "longitude": 113.352425, "precision": 119.38504},
    ),
]


@pytest.mark.parametrize("safe", [False, True], ids=["plain", "safe"])
@pytest.mark.parametrize(
    ("build", "kind", "fields"), [b[1:] for b in BUILDERS], ids=[b[0] for b in BUILDERS]
)
def test_wechatpy_parses_every_builder(
    fixed: FakeWeChat,
    safe: bool,
    build: Callable[[FakeWeChat], Callback],
    kind: Any,
    fields: dict[str, Any],
) -> None:
    fixed.safe = safe
    callback = build(fixed)
    params = callback.params
    check_signature(fixed.token, params["signature"], params["timestamp"], params["nonce"])
    assert params["timestamp"] == str(int(T0)) and params["openid"] == "o1"
    if safe:
        assert list(params) == [
            "signature",
            "timestamp",
            "nonce",
            "openid",
            "encrypt_type",
            "msg_signature",
        ]
        assert params["encrypt_type"] == "aes"
        crypto = WeChatCrypto(fixed.token, fixed.aes_key, fixed.appid)
        xml = crypto.decrypt_message(
            callback.body, params["msg_signature"], params["timestamp"], params["nonce"]
        )
        assert xml == callback.xml
        outer = parse_message(callback.body.replace(b"<xml>", b"<xml><MsgType>x</MsgType>"))
        assert outer.target == fixed.account_id
    else:
        assert list(params) == ["signature", "timestamp", "nonce", "openid"]
        assert callback.body.decode() == callback.xml
        xml = callback.xml
    message = parse_message(xml)
    assert type(message) is kind
    assert (message.source, message.target, message.time) == ("o1", fixed.account_id, int(T0))
    if isinstance(message, events.BaseEvent):
        assert callback.msg_id is None
    else:
        assert message.id == callback.msg_id and message.id > 10**16
    for name, value in fields.items():
        assert getattr(message, name) == value, name


def test_the_xml_looks_like_wechats(fixed: FakeWeChat) -> None:
    callback = fixed.text("oUser", "hi", msg_id=1234567890123456)
    assert callback.xml == (
        f"<xml><ToUserName><![CDATA[{fixed.account_id}]]></ToUserName>"
        "<FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1700000000</CreateTime>"
        "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content>"
        "<MsgId>1234567890123456</MsgId></xml>"
    )
    assert fixed.text("oUser", "a").msg_id < fixed.text("oUser", "b").msg_id  # type: ignore[operator]
    safe = fixed.text("oUser", "hi", safe=True)
    assert safe.body.startswith(
        f"<xml><ToUserName><![CDATA[{fixed.account_id}]]></ToUserName><Encrypt><![CDATA[".encode()
    )
    assert b"FromUserName" not in safe.body and safe.safe and not callback.safe


def test_every_padding_length_decrypts_with_wechatpy(fixed: FakeWeChat) -> None:
    crypto = WeChatCrypto(fixed.token, fixed.aes_key, fixed.appid)
    for n in range(70):  # covers every padding 1..32, including a whole extra block
        callback = fixed.raw("x" * n, safe=True)
        params = callback.params
        assert (
            crypto.decrypt_message(
                callback.body, params["msg_signature"], params["timestamp"], params["nonce"]
            )
            == "x" * n
        )
        assert fixed.decrypt(fixed.encrypt("x" * n)) == b"x" * n


def test_raw_bodies(fixed: FakeWeChat) -> None:
    hostile = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml>&a;</xml>'
    plain = fixed.raw(hostile)
    assert plain.body == hostile and not plain.safe and "openid" not in plain.params
    check_signature(
        fixed.token, plain.params["signature"], plain.params["timestamp"], plain.params["nonce"]
    )
    safe = fixed.raw(hostile, safe=True, openid="o1")
    crypto = WeChatCrypto(fixed.token, fixed.aes_key, fixed.appid)
    xml = crypto.decrypt_message(
        safe.body, safe.params["msg_signature"], safe.params["timestamp"], safe.params["nonce"]
    )
    assert xml == hostile.decode()
    assert safe.params["openid"] == "o1"


def test_bad_signatures_and_old_timestamps(fixed: FakeWeChat) -> None:
    crypto = WeChatCrypto(fixed.token, fixed.aes_key, fixed.appid)
    bad = fixed.text("o1", "x", safe=True, bad_signature=True)
    with pytest.raises(InvalidSignatureException):
        check_signature(
            fixed.token, bad.params["signature"], bad.params["timestamp"], bad.params["nonce"]
        )
    with pytest.raises(InvalidSignatureException):
        crypto.decrypt_message(
            bad.body, bad.params["msg_signature"], bad.params["timestamp"], bad.params["nonce"]
        )
    unsigned = fixed.text("o1", "x", safe=True, sign=False)
    assert "signature" not in unsigned.params and "msg_signature" not in unsigned.params
    old = fixed.text("o1", "x", timestamp=int(T0) - 600, nonce="12345")
    assert (old.params["timestamp"], old.params["nonce"]) == (str(int(T0) - 600), "12345")
    check_signature(fixed.token, old.params["signature"], old.params["timestamp"], "12345")
    assert parse_message(old.xml).time == int(T0)  # CreateTime stays the fake's time


def test_verify_params(fixed: FakeWeChat) -> None:
    params = fixed.verify_params("4385757493846795555")
    assert set(params) == {"signature", "timestamp", "nonce", "echostr"}
    assert params["echostr"] == "4385757493846795555"
    check_signature(fixed.token, params["signature"], params["timestamp"], params["nonce"])
    bad = fixed.verify_params(bad_signature=True)
    assert bad["echostr"].isdigit()
    with pytest.raises(InvalidSignatureException):
        check_signature(fixed.token, bad["signature"], bad["timestamp"], bad["nonce"])


def test_decrypt_reply_accepts_wechatpy_replies(fixed: FakeWeChat) -> None:
    callback = fixed.text("o1", "路灯坏了", safe=True)
    crypto = WeChatCrypto(fixed.token, fixed.aes_key, fixed.appid)
    xml = crypto.decrypt_message(
        callback.body,
        callback.params["msg_signature"],
        callback.params["timestamp"],
        callback.params["nonce"],
    )
    reply = TextReply(message=parse_message(xml), content="已受理 SQ-20261122-0001").render()
    body = crypto.encrypt_message(reply, callback.params["nonce"], callback.params["timestamp"])
    assert fixed.decrypt_reply(body.encode(), callback) == reply
    fields = fixed.reply_fields(body, callback)
    assert fields is not None
    assert (fields["MsgType"], fields["Content"], fields["ToUserName"]) == (
        "text",
        "已受理 SQ-20261122-0001",
        "o1",
    )
    assert fixed.reply_fields(reply) == fields  # a plain-mode reply
    assert fixed.reply_fields(b"success") is None and fixed.reply_fields("") is None

    with pytest.raises(ReplyError, match="ToUserName"):
        fixed.decrypt_reply(body, {"openid": "o2"})
    tampered = body.replace(callback.params["nonce"], "1", 1)
    with pytest.raises(ReplyError, match="MsgSignature"):
        fixed.decrypt_reply(tampered)
    other_app = WeChatCrypto(fixed.token, fixed.aes_key, "wx0000000000000000")
    with pytest.raises(ReplyError, match="appid"):
        fixed.decrypt_reply(other_app.encrypt_message(reply, "1", "2"))
    other_key = WeChatCrypto(fixed.token, random_aes_key(), fixed.appid)
    with pytest.raises(ReplyError):
        fixed.decrypt_reply(other_key.encrypt_message(reply, "1", "2"))
    with pytest.raises(ReplyError, match="not XML"):
        fixed.decrypt_reply(b"oops")


def test_builders_record_interactions_and_media(fixed: FakeWeChat) -> None:
    image = fixed.image("o1")
    assert image.media_id is not None
    assert fixed.media_bytes(image.media_id) is not None
    assert image.params["openid"] == "o1"
    # Known users and their windows are what the server checks: see the custom-message tests.
    video = fixed.shortvideo("o1")
    assert video.media_id is not None and fixed.media_bytes(video.media_id) is not None
    assert fixed.image("o1", media_id=image.media_id).media_id == image.media_id


def test_post_callback_sends_what_wechat_sends(fake: FakeWeChat) -> None:
    received: list[tuple[str, dict[str, str], bytes, str]] = []

    class Target(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(
                (parts.path, dict(parse_qsl(parts.query)), body, self.headers["Content-Type"])
            )
            self.send_response(200)
            self.send_header("Content-Length", "7")
            self.end_headers()
            self.wfile.write(b"success")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Target)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        callback = fake.text("o1", "你好", safe=True)
        url = f"http://127.0.0.1:{server.server_address[1]}/wechat"
        assert fake.post_callback(url, callback) == (200, b"success")
    finally:
        server.shutdown()
        server.server_close()
    assert received == [("/wechat", callback.params, callback.body, "text/xml")]


def test_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.settings import Settings

    with FakeWeChat(safe=True) as fake:
        env = fake.settings_env()
        assert env["REDESK_WECHAT_API_URL"] == fake.url
        assert not fake.url.endswith("/cgi-bin")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert wechat_of(settings).enabled
        own = wechat_of(settings)
        assert (own.app_id, own.aes_key) == (fake.appid, fake.aes_key)
        assert len(fake.aes_key) == 43
        assert fake.text("o1", "x").safe  # the builders default to the fake's mode
    with FakeWeChat() as plain:
        assert "REDESK_WECHAT_AES_KEY" not in plain.settings_env()
        assert not plain.text("o1", "x").safe
    assert fake.errors == [] and plain.errors == []


def test_given_credentials_are_used() -> None:
    key = random_aes_key()
    fake = FakeWeChat(
        appid="wx1234567890abcdef",
        app_secret="s",
        token="tok",
        aes_key=key,
        account_id="gh_0123456789ab",
    )
    assert (fake.appid, fake.app_secret, fake.token, fake.aes_key, fake.account_id) == (
        "wx1234567890abcdef",
        "s",
        "tok",
        key,
        "gh_0123456789ab",
    )
    with pytest.raises(ValueError, match="43"):
        FakeWeChat(aes_key="short")
    openid = new_openid()
    assert len(openid) == 28 and openid.startswith("o")
