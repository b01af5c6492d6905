"""The fake WeCom API (tests/fakes/wecom.py), driven by the real wechatpy.enterprise."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import xmltodict
from wechatpy.enterprise import WeChatClient
from wechatpy.enterprise.crypto import WeChatCrypto
from wechatpy.enterprise.exceptions import InvalidCorpIdException
from wechatpy.exceptions import (
    APILimitedException,
    InvalidSignatureException,
    WeChatClientException,
)

from tests.fakes.wecom import (
    RESPONSE_CODE_ERRCODE,
    CryptoError,
    FakeWeCom,
    decrypt,
    encrypt,
    msg_signature,
    random_aes_key,
)

#: A fixed clock, so CreateTime and timestamps are known.
T0 = 1_700_000_000.0

#: wechatpy's own worked example (its tests/test_enterprise_crypto.py): the app's settings...
SAMPLE_TOKEN = "123456"
SAMPLE_AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
SAMPLE_CORP_ID = "wx49f0ab532d5d035a"
#: ...a URL verification...
SAMPLE_VERIFY = {
    "msg_signature": "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96",
    "timestamp": "1411443780",
    "nonce": "437374425",
    "echostr": "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchL"
    "F6p+Q==",
}
#: ...an encrypted message (a text "test" from member "messense")...
SAMPLE_ENCRYPT = (
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTy"
    "eDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYy"
    "olBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWO"
    "MZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7ml"
    "sl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0="
)
SAMPLE_MESSAGE = {
    "msg_signature": "74d92dfeb87ba7c714f89d98870ae5eb62dff26d",
    "timestamp": "1411525903",
    "nonce": "461056294",
}
#: ...and a reply encrypted with the random prefix "1234567890123456".
SAMPLE_REPLY = """<xml>
<MsgType><![CDATA[text]]></MsgType>
<Content><![CDATA[test]]></Content>
<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>
<ToUserName><![CDATA[messense]]></ToUserName>
<AgentID>1</AgentID>
<CreateTime>1411525903</CreateTime>
</xml>"""
SAMPLE_REPLY_ENCRYPT = (
    "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBqGs"
    "L8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFhHZSj"
    "PUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPPJv"
    "FurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2XeFY"
    "FMNMpatF9XiKzHo3"
)
SAMPLE_REPLY_SIGNATURE = "407518b7649e86ef23978113f92d27afa9296533"


class FakeClient(WeChatClient):  # type: ignore[misc]
    """wechatpy's WeCom client pointed at the fake, as the product has to do it."""

    def __init__(self, fake: FakeWeCom, secret: str | None = None, **kwargs: Any) -> None:
        super().__init__(fake.corp_id, secret or fake.secret, **kwargs)
        self.API_BASE_URL = fake.api_base_url
        self.token_url = fake.token_url

    def fetch_access_token(self) -> dict[str, Any]:
        return self._fetch_access_token(  # type: ignore[no-any-return]
            url=self.token_url,
            params={"corpid": self.corp_id, "corpsecret": self.secret},
        )


@pytest.fixture
def fake() -> Iterator[FakeWeCom]:
    with FakeWeCom(clock=lambda: T0) as server:
        yield server
    assert server.errors == []


@pytest.fixture
def make_client(fake: FakeWeCom) -> Iterator[Callable[..., FakeClient]]:
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


def crypto_of(fake: FakeWeCom) -> WeChatCrypto:
    return WeChatCrypto(fake.token, fake.aes_key, fake.corp_id)


def errcode_of(call: Callable[[], object]) -> int | None:
    with pytest.raises(WeChatClientException) as info:
        call()
    return info.value.errcode  # type: ignore[no-any-return]


def card(task_id: str = "req-42", **overrides: Any) -> dict[str, Any]:
    """A button_interaction card as the product sends it."""
    template: dict[str, Any] = {
        "card_type": "button_interaction",
        "main_title": {"title": "#42 路灯", "desc": "东门路灯不亮"},
        "task_id": task_id,
        "button_list": [
            {"text": "受理", "style": 1, "key": "accept:42"},
            {"text": "转单", "style": 2, "key": "transfer:42"},
        ],
    }
    template.update(overrides)
    return template


def send_card(
    client: FakeClient,
    fake: FakeWeCom,
    touser: str,
    template: dict[str, Any],
) -> dict[str, Any]:
    return client.post(  # type: ignore[no-any-return]
        "message/send",
        data={
            "touser": touser,
            "agentid": fake.agent_id,
            "msgtype": "template_card",
            "template_card": template,
        },
    )


def update_card(client: FakeClient, fake: FakeWeCom, **body: Any) -> dict[str, Any]:
    return client.post(  # type: ignore[no-any-return]
        "message/update_template_card",
        data={"agentid": fake.agent_id, **body},
    )


# --------------------------------------------------------------------------- crypto


def test_the_fake_reads_wechatpys_worked_example_message() -> None:
    # Given the encrypted message of wechatpy's worked example
    signature = msg_signature(
        SAMPLE_TOKEN, SAMPLE_MESSAGE["timestamp"], SAMPLE_MESSAGE["nonce"], SAMPLE_ENCRYPT
    )
    # When the fake's own crypto checks and decrypts it
    message, receive_id = decrypt(SAMPLE_AES_KEY, SAMPLE_ENCRYPT)
    # Then it finds the example's signature, sender and content
    assert signature == SAMPLE_MESSAGE["msg_signature"]
    assert receive_id == SAMPLE_CORP_ID
    fields = xmltodict.parse(message)["xml"]
    assert (fields["FromUserName"], fields["Content"]) == ("messense", "test")


def test_the_fake_encrypts_wechatpys_worked_example_byte_for_byte() -> None:
    encrypted = encrypt(SAMPLE_AES_KEY, SAMPLE_REPLY, SAMPLE_CORP_ID, random=b"1234567890123456")
    assert encrypted == SAMPLE_REPLY_ENCRYPT
    assert (
        msg_signature(SAMPLE_TOKEN, "1411525903", "461056294", encrypted) == SAMPLE_REPLY_SIGNATURE
    )


def test_the_fake_decrypts_the_worked_example_verification_as_wechatpy_does() -> None:
    expected = WeChatCrypto(SAMPLE_TOKEN, SAMPLE_AES_KEY, SAMPLE_CORP_ID).check_signature(
        SAMPLE_VERIFY["msg_signature"],
        SAMPLE_VERIFY["timestamp"],
        SAMPLE_VERIFY["nonce"],
        SAMPLE_VERIFY["echostr"],
    )
    echostr, receive_id = decrypt(SAMPLE_AES_KEY, SAMPLE_VERIFY["echostr"])
    assert (
        msg_signature(
            SAMPLE_TOKEN,
            SAMPLE_VERIFY["timestamp"],
            SAMPLE_VERIFY["nonce"],
            SAMPLE_VERIFY["echostr"],
        )
        == SAMPLE_VERIFY["msg_signature"]
    )
    assert (echostr.decode(), receive_id) == (expected, SAMPLE_CORP_ID)


def test_a_callback_built_by_the_fake_decrypts_with_wechatpy(fake: FakeWeCom) -> None:
    # Given a text from a member, built as WeCom sends it
    callback = fake.text("lisj", "绑定 123456")
    # When wechatpy checks and decrypts it
    params = callback.params
    plain = crypto_of(fake).decrypt_message(
        callback.body, params["msg_signature"], params["timestamp"], params["nonce"]
    )
    # Then it reads the message the fake built, addressed from the member to the corp
    fields = xmltodict.parse(plain)["xml"]
    assert plain == callback.xml
    assert fields["FromUserName"] == "lisj"
    assert fields["ToUserName"] == fake.corp_id
    assert fields["Content"] == "绑定 123456"
    assert fields["AgentID"] == str(fake.agent_id)
    assert int(fields["MsgId"]) == callback.msg_id
    assert params["timestamp"] == str(int(T0))
    wrapper = xmltodict.parse(callback.body)["xml"]
    assert (wrapper["ToUserName"], wrapper["AgentID"]) == (fake.corp_id, str(fake.agent_id))


def test_a_verification_built_by_the_fake_is_answered_by_wechatpy(fake: FakeWeCom) -> None:
    verification = fake.verification()
    params = verification.params
    answer = crypto_of(fake).check_signature(
        params["msg_signature"], params["timestamp"], params["nonce"], params["echostr"]
    )
    assert answer == verification.echostr
    assert params["echostr"] != verification.echostr


def test_a_reply_encrypted_by_wechatpy_is_read_by_the_fake(fake: FakeWeCom) -> None:
    reply = crypto_of(fake).encrypt_message("<xml><Content>好</Content></xml>", "12345")
    assert fake.decrypt_reply(reply) == "<xml><Content>好</Content></xml>"


def test_a_reply_with_a_wrong_signature_is_refused_by_the_fake(fake: FakeWeCom) -> None:
    reply = crypto_of(fake).encrypt_message("<xml/>", "12345")
    with pytest.raises(CryptoError, match="MsgSignature"):
        fake.decrypt_reply(reply.replace("<Nonce><![CDATA[12345]]>", "<Nonce><![CDATA[1]]>"))


def test_a_bad_signature_is_refused_by_wechatpy(fake: FakeWeCom) -> None:
    callback = fake.text("lisj", "hi", bad_signature=True)
    params = callback.params
    with pytest.raises(InvalidSignatureException):
        crypto_of(fake).decrypt_message(
            callback.body, params["msg_signature"], params["timestamp"], params["nonce"]
        )
    verification = fake.verification(bad_signature=True).params
    with pytest.raises(InvalidSignatureException):
        crypto_of(fake).check_signature(
            verification["msg_signature"],
            verification["timestamp"],
            verification["nonce"],
            verification["echostr"],
        )


def test_another_corps_message_is_refused_by_wechatpy(fake: FakeWeCom) -> None:
    callback = fake.text("lisj", "hi", receive_id="wwotherCorp0000000")
    params = callback.params
    with pytest.raises(InvalidCorpIdException):
        crypto_of(fake).decrypt_message(
            callback.body, params["msg_signature"], params["timestamp"], params["nonce"]
        )
    with pytest.raises(CryptoError, match="ReceiveId"):
        fake.decrypt(xmltodict.parse(callback.body)["xml"]["Encrypt"])


def test_a_message_under_another_key_does_not_decrypt(fake: FakeWeCom) -> None:
    callback = fake.text("lisj", "hi", aes_key=random_aes_key())
    with pytest.raises(CryptoError):
        fake.decrypt(xmltodict.parse(callback.body)["xml"]["Encrypt"])


def test_a_stale_callback_is_an_hour_old_and_still_correctly_signed(fake: FakeWeCom) -> None:
    callback = fake.text("lisj", "hi", stale=True)
    params = callback.params
    assert int(params["timestamp"]) == int(T0) - 3600
    crypto_of(fake).decrypt_message(
        callback.body, params["msg_signature"], params["timestamp"], params["nonce"]
    )


def test_a_replay_is_the_identical_request(fake: FakeWeCom) -> None:
    callback = fake.text("lisj", "hi")
    again = fake.replay(callback)
    assert (again.params, again.body, again.msg_id) == (
        callback.params,
        callback.body,
        callback.msg_id,
    )
    assert fake.text("lisj", "hi").msg_id != callback.msg_id


def test_a_press_is_a_template_card_event_as_wecom_documents_it(
    fake: FakeWeCom,
    client: FakeClient,
) -> None:
    # Given a card delivered to the member
    fake.member("lisj", "李书记")
    send_card(client, fake, "lisj", card("req-42"))
    # When the member presses its first button
    press = fake.press("lisj", "accept:42")
    params = press.params
    plain = crypto_of(fake).decrypt_message(
        press.body, params["msg_signature"], params["timestamp"], params["nonce"]
    )
    # Then the event carries the key, task, card type and a response code
    fields = xmltodict.parse(plain)["xml"]
    assert fields["MsgType"] == "event"
    assert fields["Event"] == "template_card_event"
    assert fields["EventKey"] == "accept:42"
    assert fields["TaskId"] == "req-42"
    assert fields["CardType"] == "button_interaction"
    assert fields["ResponseCode"] == press.response_code
    assert fake.response_code_used(str(press.response_code)) is False


def test_an_event_carries_its_key(fake: FakeWeCom) -> None:
    fields = xmltodict.parse(fake.event("lisj", "click", "menu:help").xml)["xml"]
    assert (fields["Event"], fields["EventKey"]) == ("click", "menu:help")
    assert "MsgId" not in fields


def test_hostile_xml_is_wrapped_like_any_message(fake: FakeWeCom) -> None:
    bomb = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml>&a;</xml>'
    callback = fake.callback(bomb)
    params = callback.params
    assert (
        crypto_of(fake).decrypt_message(
            callback.body, params["msg_signature"], params["timestamp"], params["nonce"]
        )
        == bomb
    )


# --------------------------------------------------------------------------- tokens


def test_gettoken_answers_the_same_token_while_it_is_valid(
    fake: FakeWeCom,
    make_client: Callable[..., FakeClient],
) -> None:
    first = make_client().fetch_access_token()
    fake.advance(minutes=10)
    second = make_client().fetch_access_token()
    assert first["access_token"] == second["access_token"]
    assert (first["expires_in"], second["expires_in"]) == (7200, 6600)
    fake.advance(hours=2)
    assert make_client().fetch_access_token()["access_token"] != first["access_token"]
    assert fake.token_fetches == 3


def test_a_wrong_secret_or_corp_id_is_refused(
    fake: FakeWeCom,
    make_client: Callable[..., FakeClient],
) -> None:
    assert errcode_of(make_client("wrong-secret").fetch_access_token) == 40001
    other = make_client()
    other.corp_id = "wwnotthiscorp"
    assert errcode_of(other.fetch_access_token) == 40013
    assert fake.token_fetches == 0


def test_an_expired_token_is_refreshed_by_wechatpy(fake: FakeWeCom, client: FakeClient) -> None:
    fake.member("lisj")
    client.message.send_text(fake.agent_id, "lisj", "一")
    fake.expire_tokens()
    client.message.send_text(fake.agent_id, "lisj", "二")
    errcodes = [call.errcode for call in fake.calls if call.path == "message/send"]
    assert errcodes == [0, 42001, 0]
    assert fake.texts("lisj") == ["一", "二"]
    assert len(fake.tokens) == 2


def test_a_revoked_token_answers_40014(
    fake: FakeWeCom,
    make_client: Callable[..., FakeClient],
) -> None:
    fake.member("lisj")
    client = make_client(auto_retry=False)
    client.message.send_text(fake.agent_id, "lisj", "一")
    fake.revoke_tokens()
    assert errcode_of(lambda: client.message.send_text(fake.agent_id, "lisj", "二")) == 40014
    assert fake.texts("lisj") == ["一"]


def test_a_call_without_a_token_answers_41001(fake: FakeWeCom) -> None:
    answer = requests.get(f"{fake.api_base_url}user/get", params={"userid": "x"}, timeout=5)
    assert answer.json()["errcode"] == 41001
    assert "more info at" in answer.json()["errmsg"]


# --------------------------------------------------------------------------- message/send


def test_a_text_reaches_the_members_named(fake: FakeWeCom, client: FakeClient) -> None:
    fake.member("lisj")
    fake.member("wangg")
    answer = client.message.send_text(fake.agent_id, ["lisj", "wangg"], "开会")
    assert answer["msgid"]
    assert "invaliduser" not in answer
    assert fake.texts("lisj") == fake.texts("wangg") == ["开会"]
    assert fake.sent("wangg")[0].userids == ["lisj", "wangg"]


def test_unknown_members_are_listed_and_the_others_still_served(
    fake: FakeWeCom,
    client: FakeClient,
) -> None:
    fake.member("lisj")
    answer = client.message.send_text(fake.agent_id, ["lisj", "ghost"], "开会")
    assert answer["invaliduser"] == "ghost"
    assert fake.texts("lisj") == ["开会"]
    assert fake.texts("ghost") == []


def test_a_text_to_nobody_known_answers_81013(fake: FakeWeCom, client: FakeClient) -> None:
    with pytest.raises(WeChatClientException) as info:
        client.message.send_text(fake.agent_id, "ghost", "开会")
    assert info.value.errcode == 81013
    assert fake.deliveries() == []


def test_a_text_over_2048_bytes_is_truncated_as_wecom_says(
    fake: FakeWeCom,
    client: FakeClient,
) -> None:
    fake.member("lisj")
    client.message.send_text(fake.agent_id, "lisj", "路" * 700)  # 2100 bytes
    (delivery,) = fake.deliveries("lisj")
    assert delivery.truncated
    assert delivery.text == "路" * 682
    client.message.send_text(fake.agent_id, "lisj", "路" * 682)
    assert not fake.deliveries("lisj")[1].truncated


def test_markdown_is_delivered_and_checked(fake: FakeWeCom, client: FakeClient) -> None:
    fake.member("lisj")
    client.message.send_markdown(fake.agent_id, "lisj", "**#42** 路灯")
    assert fake.markdowns("lisj") == ["**#42** 路灯"]
    assert errcode_of(lambda: client.message.send_markdown(fake.agent_id, "lisj", "")) == 44004
    assert (
        errcode_of(lambda: client.message.send_markdown(fake.agent_id, "lisj", "x" * 2049)) == 45002
    )


def test_a_wrong_agent_or_msgtype_is_refused(fake: FakeWeCom, client: FakeClient) -> None:
    fake.member("lisj")
    assert errcode_of(lambda: client.message.send_text(1, "lisj", "x")) == 40056
    assert (
        errcode_of(
            lambda: client.message.send(
                fake.agent_id, "lisj", msg={"msgtype": "hologram", "hologram": {}}
            )
        )
        == 40008
    )
    assert errcode_of(lambda: client.message.send_text(fake.agent_id, "", "x")) == 82001
    assert fake.deliveries() == []


def test_a_button_card_answers_a_response_code_and_is_recorded(
    fake: FakeWeCom,
    client: FakeClient,
) -> None:
    fake.member("lisj")
    answer = send_card(client, fake, "lisj", card("req-42"))
    assert answer["response_code"]
    assert fake.response_code_used(answer["response_code"]) is False
    assert fake.cards("lisj") == [card("req-42")]
    sent = fake.card("req-42")
    assert sent is not None
    assert sent.recipients == ["lisj"]
    assert sent.msgid == answer["msgid"]


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"task_id": None}, 40058),
        ({"task_id": "has space"}, 40058),
        ({"main_title": {"desc": "no title"}}, 41016),
        ({"button_list": []}, 40058),
        ({"button_list": [{"text": str(i), "key": str(i)} for i in range(7)]}, 40058),
        ({"button_list": [{"text": "受理"}]}, 42019),
        ({"button_list": [{"key": "k"}]}, 42020),
        ({"button_list": [{"text": "a", "key": "k"}, {"text": "b", "key": "k"}]}, 42018),
        ({"button_list": [{"text": "a", "key": "k" * 1025}]}, 42018),
        ({"button_list": [{"text": "看", "type": 1}]}, 41010),
        ({"card_type": "hologram"}, 40058),
    ],
)
def test_a_button_card_missing_a_required_field_is_refused(
    fake: FakeWeCom,
    client: FakeClient,
    change: dict[str, Any],
    errcode: int,
) -> None:
    fake.member("lisj")
    template = {k: v for k, v in card(**change).items() if v is not None}
    assert errcode_of(lambda: send_card(client, fake, "lisj", template)) == errcode
    assert fake.deliveries() == []


def test_a_task_id_is_used_once_per_app(fake: FakeWeCom, client: FakeClient) -> None:
    fake.member("lisj")
    send_card(client, fake, "lisj", card("req-42"))
    assert errcode_of(lambda: send_card(client, fake, "lisj", card("req-42"))) == 40058
    assert len(fake.cards("lisj")) == 1


# --------------------------------------------------------------------------- update_template_card


def test_the_send_response_code_replaces_the_buttons_once(
    fake: FakeWeCom,
    client: FakeClient,
) -> None:
    # Given a card sent to two members
    fake.member("lisj")
    fake.member("wangg")
    code = send_card(client, fake, "lisj|wangg", card("req-42"))["response_code"]
    # When the app replaces the buttons for one of them
    update_card(
        client,
        fake,
        userids=["lisj"],
        response_code=code,
        button={"replace_name": "已受理 · 李书记"},
    )
    # Then that member sees the label, the other the buttons, and the code is spent
    assert fake.view("req-42", "lisj") is not None
    assert fake.view("req-42", "lisj").replace_name == "已受理 · 李书记"  # type: ignore[union-attr]
    assert fake.view("req-42", "wangg").replace_name is None  # type: ignore[union-attr]
    assert fake.response_code_used(code) is True
    with pytest.raises(WeChatClientException) as info:
        update_card(
            client, fake, userids=["wangg"], response_code=code, button={"replace_name": "已受理"}
        )
    assert info.value.errcode == RESPONSE_CODE_ERRCODE
    assert "response_code" in info.value.errmsg
    assert fake.view("req-42", "wangg").replace_name is None  # type: ignore[union-attr]


def test_a_press_gives_a_fresh_code_for_its_card_only(fake: FakeWeCom, client: FakeClient) -> None:
    fake.member("lisj")
    send_card(client, fake, "lisj", card("req-42"))
    send_card(client, fake, "lisj", card("req-43"))
    press = fake.press("lisj", "accept:42", "req-42")
    other = card("req-43", button_list=[{"text": "已受理", "key": "done:43"}])
    with pytest.raises(WeChatClientException) as info:
        update_card(
            client, fake, userids=["lisj"], response_code=press.response_code, template_card=other
        )
    assert info.value.errcode == RESPONSE_CODE_ERRCODE
    assert fake.response_code_used(str(press.response_code)) is False
    replacement = card("req-42", button_list=[{"text": "已受理", "key": "done:42"}])
    update_card(
        client, fake, userids=["lisj"], response_code=press.response_code, template_card=replacement
    )
    assert fake.view("req-42", "lisj").template_card == replacement  # type: ignore[union-attr]
    assert fake.view("req-43", "lisj").updates == 0  # type: ignore[union-attr]


def test_a_forged_press_code_and_an_old_code_are_refused(
    fake: FakeWeCom,
    client: FakeClient,
) -> None:
    fake.member("lisj")
    code = send_card(client, fake, "lisj", card("req-42"))["response_code"]
    forged = fake.press("lisj", "accept:99", "req-99")
    assert fake.response_code_used(str(forged.response_code)) is None
    assert (
        errcode_of(
            lambda: update_card(
                client,
                fake,
                userids=["lisj"],
                response_code=forged.response_code,
                button={"replace_name": "x"},
            )
        )
        == RESPONSE_CODE_ERRCODE
    )
    fake.advance(hours=73)
    assert (
        errcode_of(
            lambda: update_card(
                client, fake, userids=["lisj"], response_code=code, button={"replace_name": "x"}
            )
        )
        == RESPONSE_CODE_ERRCODE
    )


def test_an_update_for_someone_not_on_the_card_answers_81013(
    fake: FakeWeCom,
    client: FakeClient,
) -> None:
    fake.member("lisj")
    fake.member("wangg")
    code = send_card(client, fake, "lisj", card("req-42"))["response_code"]
    assert (
        errcode_of(
            lambda: update_card(
                client, fake, userids=["wangg"], response_code=code, button={"replace_name": "x"}
            )
        )
        == 81013
    )
    assert fake.response_code_used(code) is False
    assert (
        errcode_of(
            lambda: update_card(
                client, fake, userids=["lisj"], response_code=code, button={"replace_name": ""}
            )
        )
        == 42020
    )


# --------------------------------------------------------------------------- user/get, media/get


def test_user_get_answers_a_member_and_60111_for_a_stranger(
    fake: FakeWeCom,
    client: FakeClient,
) -> None:
    fake.member("lisj", "李书记", position="书记")
    member = client.user.get("lisj")
    assert (member["userid"], member["name"], member["position"]) == ("lisj", "李书记", "书记")
    assert errcode_of(lambda: client.user.get("ghost")) == 60111


def test_media_get_answers_the_bytes_with_a_filename(fake: FakeWeCom, client: FakeClient) -> None:
    media_id = fake.media(None, b"\x89PNG...", "image/png", "photo.png")
    answer = requests.get(
        f"{fake.api_base_url}media/get",
        params={"access_token": client.access_token, "media_id": media_id},
        timeout=5,
    )
    assert answer.content == b"\x89PNG..."
    assert answer.headers["Content-Type"] == "image/png"
    assert 'filename="photo.png"' in answer.headers["Content-disposition"]
    unknown = requests.get(
        f"{fake.api_base_url}media/get",
        params={"access_token": client.access_token, "media_id": "nope"},
        timeout=5,
    )
    assert unknown.json()["errcode"] == 40007


def test_media_expires_after_three_days(fake: FakeWeCom, client: FakeClient) -> None:
    # Given a picture a member sent (its media is registered)
    picture = xmltodict.parse(fake.image("lisj", "m1").xml)["xml"]
    assert picture["MediaId"] == "m1"

    def media_get() -> requests.Response:
        return requests.get(
            f"{fake.api_base_url}media/get",
            timeout=5,
            params={"access_token": client.fetch_access_token()["access_token"], "media_id": "m1"},
        )

    assert media_get().content.startswith(b"\xff\xd8")
    # When three days pass, then it is gone
    fake.advance(days=3, seconds=1)
    assert media_get().json()["errcode"] == 40007


# --------------------------------------------------------------------------- limits and faults


def test_the_per_member_limit_answers_45009_beyond_30_a_minute(
    fake: FakeWeCom,
    client: FakeClient,
) -> None:
    fake.member("lisj")
    fake.limit_members(30)
    for i in range(30):
        client.message.send_text(fake.agent_id, "lisj", str(i))
    with pytest.raises(APILimitedException):
        client.message.send_text(fake.agent_id, "lisj", "30")
    assert len(fake.texts("lisj")) == 30
    fake.advance(seconds=61)
    client.message.send_text(fake.agent_id, "lisj", "later")
    assert fake.texts("lisj")[-1] == "later"


def test_the_silent_member_limit_drops_as_wecom_documents(
    fake: FakeWeCom,
    client: FakeClient,
) -> None:
    fake.member("lisj")
    fake.limit_members(1, silent=True)
    client.message.send_text(fake.agent_id, "lisj", "一")
    assert client.message.send_text(fake.agent_id, "lisj", "二")["errcode"] == 0
    assert fake.texts("lisj") == ["一"]
    assert [userid for userid, _ in fake.dropped] == ["lisj"]


def test_a_5xx_is_not_json_and_does_not_send(fake: FakeWeCom, client: FakeClient) -> None:
    fake.member("lisj")
    fake.fail_next(status=502)
    assert errcode_of(lambda: client.message.send_text(fake.agent_id, "lisj", "x")) is None
    fake.fail_next(errcode=-1)
    assert errcode_of(lambda: client.message.send_text(fake.agent_id, "lisj", "x")) == -1
    assert fake.texts("lisj") == []
    client.message.send_text(fake.agent_id, "lisj", "x")
    assert fake.texts("lisj") == ["x"]


def test_a_network_fault_closes_the_connection_unanswered(
    fake: FakeWeCom,
    client: FakeClient,
) -> None:
    fake.member("lisj")
    fake.fail_next(network=True, paths="message/send")
    with pytest.raises(requests.ConnectionError):
        client.message.send_text(fake.agent_id, "lisj", "x")
    assert fake.texts("lisj") == []
    assert fake.calls[-1].status == 0


def test_a_delayed_answer_times_out_after_the_message_went(
    fake: FakeWeCom,
    make_client: Callable[..., FakeClient],
) -> None:
    fake.member("lisj")
    client = make_client(timeout=0.2)
    client.fetch_access_token()
    fake.delay_next(1, 1.0, paths="message/send")
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.message.send_text(fake.agent_id, "lisj", "x")
    assert fake.texts("lisj") == ["x"]


def test_faults_spare_gettoken_unless_named(fake: FakeWeCom, client: FakeClient) -> None:
    fake.fail_next(errcode=-1, paths="gettoken")
    assert errcode_of(client.fetch_access_token) == -1
    fake.fail_next(errcode=-1)
    assert client.fetch_access_token()["access_token"]


def test_a_post_endpoint_refuses_get_and_bad_json(fake: FakeWeCom, client: FakeClient) -> None:
    token = client.access_token
    answer = requests.get(
        f"{fake.api_base_url}message/send", params={"access_token": token}, timeout=5
    )
    assert answer.json()["errcode"] == 43002
    bad = requests.post(
        f"{fake.api_base_url}message/send",
        params={"access_token": token},
        data=b"{not json",
        timeout=5,
    )
    assert bad.json()["errcode"] == 40058


# --------------------------------------------------------------------------- posting callbacks


class _App(BaseHTTPRequestHandler):
    """A minimal callback receiver using wechatpy, to see the requests as an app does."""

    crypto: WeChatCrypto
    seen: list[tuple[str, dict[str, str], bytes]]

    def log_message(self, format: str, *args: Any) -> None:  # the base's name
        pass

    def _params(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.path).query))

    def do_GET(self) -> None:
        params = self._params()
        answer = self.crypto.check_signature(
            params["msg_signature"], params["timestamp"], params["nonce"], params["echostr"]
        )
        self._answer(answer.encode() if isinstance(answer, str) else answer)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.headers["Content-Type"], self._params(), body))
        self._answer(b"")

    def _answer(self, payload: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def test_post_callback_sends_what_an_app_verifies(fake: FakeWeCom) -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Handler", (_App,), {"crypto": crypto_of(fake), "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/wecom"
        verification = fake.verification()
        assert fake.post_callback(url, verification) == (200, str(verification.echostr).encode())
        callback = fake.text("lisj", "hi")
        assert fake.post_callback(url, callback) == (200, b"")
        content_type, params, body = seen[0]
        assert (content_type, params, body) == ("text/xml", callback.params, callback.body)
    finally:
        server.shutdown()
        server.server_close()
