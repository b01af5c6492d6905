"""bot/handlers/smalltalk: the small-talk rule is a word list and a minimum length."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.handlers import smalltalk
from bot.handlers.smalltalk import Kind, Rule, WordListError, normalise, parse_word_list
from bot.runtime import reset
from storage.settings import get_settings

#: The shipped rule with the shipped minimum length.
SHIPPED = smalltalk.load_rule(None, 3)


@pytest.mark.parametrize(
    ("text", "core"),
    [
        ("谢谢！", "谢谢"),
        ("  谢 谢  ", "谢谢"),
        ("ＯＫ", "ok"),
        ("Thank you!", "thankyou"),
        ("👍🏻", ""),
        ("👨‍👩‍👧", ""),
        ("❤️", ""),
        ("。。。？！…", ""),
        ("１２号楼", "12号楼"),
    ],
)
def test_normalising_folds_full_width_forms_and_drops_punctuation_emoji_and_spaces(
    text: str,
    core: str,
) -> None:
    assert normalise(text) == core


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("你好", Kind.GREETING),
        ("在吗？？", Kind.GREETING),
        ("Hello", Kind.GREETING),
        ("谢谢", Kind.THANKS),
        ("好的，谢谢！", Kind.THANKS),
        ("你好，谢谢", Kind.THANKS),
        ("收到", Kind.ACK),
        ("嗯嗯 好的", Kind.ACK),
        ("OK👌", Kind.ACK),
        ("🙏", Kind.EMPTY),
        ("？", Kind.EMPTY),
        ("停水", Kind.SHORT),
        ("a", Kind.SHORT),
        ("漏水了", Kind.REQUEST),
        ("路灯坏了", Kind.REQUEST),
        ("你好，我家门口的路灯坏了", Kind.REQUEST),
        ("谢谢，但是路灯还是不亮", Kind.REQUEST),
    ],
)
def test_the_shipped_rule_tells_small_talk_from_requests(text: str, kind: Kind) -> None:
    assert SHIPPED.classify(text) is kind


def test_a_minimum_length_of_zero_takes_any_text_that_is_not_small_talk() -> None:
    rule = Rule(SHIPPED.phrases, 0)

    assert rule.classify("停水") is Kind.REQUEST
    assert rule.classify("谢谢") is Kind.THANKS


def test_a_long_text_made_only_of_phrases_is_still_a_request() -> None:
    # Beyond MAX_SMALL_TALK characters nobody is only saying thank you
    text = "谢谢" * (smalltalk.MAX_SMALL_TALK // 2 + 1)

    assert SHIPPED.classify(text) is Kind.REQUEST


def test_a_word_list_is_read_by_section_and_normalised() -> None:
    phrases = parse_word_list("# a comment\n\n[thanks]\n谢谢！\n[ACK]\n  ＯＫ  \n")

    assert phrases == {"谢谢": Kind.THANKS, "ok": Kind.ACK}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("谢谢\n", "line 1: a phrase before any section"),
        ("[thanks]\n谢谢\n[bye]\n拜拜\n", "line 3: unknown section [bye]"),
    ],
)
def test_a_malformed_word_list_is_refused_with_its_line(content: str, message: str) -> None:
    with pytest.raises(WordListError) as raised:
        parse_word_list(content, "list.txt")

    assert f"list.txt, {message}" in str(raised.value)


def test_the_settings_choose_the_word_list_and_the_minimum_length(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Given a centre's own word list (its dialect's 要得) and a minimum length of 5
    words = tmp_path / "words.txt"
    words.write_text("[ack]\n要得\n", encoding="utf-8")
    monkeypatch.setenv("REDESK_SMALL_TALK_FILE", str(words))
    monkeypatch.setenv("REDESK_MIN_REQUEST_LENGTH", "5")
    reset()
    try:
        # When the rule of the process is asked for
        rule = smalltalk.current_rule()

        # Then it is that list (谢谢 is no longer in it) and that length
        assert rule.classify("要得！") is Kind.ACK
        assert rule.classify("谢谢") is Kind.SHORT
        assert rule.classify("路灯坏了") is Kind.SHORT
        assert rule.classify("路灯坏了三天") is Kind.REQUEST
    finally:
        monkeypatch.delenv("REDESK_SMALL_TALK_FILE")
        monkeypatch.delenv("REDESK_MIN_REQUEST_LENGTH")
        reset()
    assert get_settings().small_talk_file is None
