"""bot/handlers/commands.parse: command words, slash aliases, and what is not a command."""

from __future__ import annotations

import pytest

from bot.handlers.commands import COMMANDS, Command, parse

NUMBER = "SQ-20260101-0001"


@pytest.mark.parametrize(
    ("word", "name"),
    [
        ("帮助", "help"),
        ("绑定", "bind"),
        ("查询", "status"),
        ("补充", "supplement"),
        ("撤销", "cancel"),
        ("评价", "rate"),
        ("待办", "inbox"),
        ("受理", "accept"),
        ("转单", "forward"),
        ("驳回", "reject"),
        ("办结", "complete"),
        ("回单", "approve"),
        ("返工", "send_back"),
        ("接收", "take"),
        ("退单", "return"),
        ("取消", "abort"),
        ("撤回转单", "recall"),
    ],
)
def test_every_chinese_command_word_of_the_design_parses_to_its_command(
    word: str, name: str
) -> None:
    assert parse(f"{word} {NUMBER}") == Command(name, NUMBER, "")


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("/help", "help"),
        ("/start", "help"),
        ("/bind", "bind"),
        ("/status", "status"),
        ("/add", "supplement"),
        ("/cancel", "cancel"),
        ("/rate", "rate"),
        ("/inbox", "inbox"),
        ("/accept", "accept"),
        ("/forward", "forward"),
        ("/reject", "reject"),
        ("/done", "complete"),
        ("/approve", "approve"),
        ("/sendback", "send_back"),
        ("/take", "take"),
        ("/return", "return"),
        ("/abort", "abort"),
        ("/recall", "recall"),
    ],
)
def test_every_slash_alias_of_the_design_parses_to_its_command(alias: str, name: str) -> None:
    assert parse(f"{alias} {NUMBER}") == Command(name, NUMBER, "")


def test_every_word_in_the_command_table_is_either_chinese_or_a_slash_alias() -> None:
    # The table is the contract of DESIGN §5; a typo there would silently drop a command.
    for word in COMMANDS:
        assert word.startswith("/") or all("\u4e00" <= char <= "\u9fff" for char in word), word


def test_a_command_without_arguments_has_empty_arguments() -> None:
    assert parse("待办") == Command("inbox", "", "")
    assert parse("/help") == Command("help", "", "")


def test_a_slash_command_addressed_to_the_bot_by_name_is_understood() -> None:
    assert parse(f"/accept@redesk_bot {NUMBER}") == Command("accept", NUMBER, "")
    assert parse("/help@redesk_bot") == Command("help", "", "")


def test_slash_aliases_are_case_insensitive() -> None:
    assert parse(f"/Accept {NUMBER}") == Command("accept", NUMBER, "")
    assert parse("/HELP@Redesk_Bot") == Command("help", "", "")


def test_an_unknown_slash_command_parses_as_unknown() -> None:
    assert parse("/frobnicate now") == Command("unknown", "", "")
    assert parse("/") == Command("unknown", "", "")


def test_a_chinese_word_glued_to_a_number_is_split() -> None:
    assert parse(f"查询{NUMBER}") == Command("status", NUMBER, "")
    assert parse(f"受理{NUMBER}") == Command("accept", NUMBER, "")


def test_the_recall_word_glued_to_a_number_is_a_recall_not_a_forward() -> None:
    # 撤回转单 contains 转单: the whole word must win
    assert parse(f"撤回转单{NUMBER}") == Command("recall", NUMBER, "")
    assert parse(f"撤回转单 {NUMBER}") == Command("recall", NUMBER, "")


def test_a_glued_number_in_lower_case_is_still_recognised() -> None:
    assert parse("查询sq-20260101-0001") == Command("status", "sq-20260101-0001", "")


def test_a_glued_command_keeps_the_text_after_the_number() -> None:
    assert parse(f"办结{NUMBER} 已修好") == Command("complete", NUMBER, "已修好")


def test_the_rest_of_the_line_is_kept_as_one_argument() -> None:
    assert parse(f"转单 {NUMBER} 春熙路 街道办") == Command("forward", NUMBER, "春熙路 街道办")


def test_a_multi_line_result_keeps_its_line_breaks() -> None:
    command = parse(f"办结 {NUMBER} 第一步：已到现场\n第二步：已更换灯泡\n")

    assert command == Command("complete", NUMBER, "第一步：已到现场\n第二步：已更换灯泡")


def test_the_number_may_be_on_its_own_line() -> None:
    assert parse(f"办结\n{NUMBER}\n已处理") == Command("complete", NUMBER, "已处理")


def test_surrounding_and_ideographic_spaces_separate_arguments() -> None:
    assert parse(f"  受理\u3000{NUMBER}  ") == Command("accept", NUMBER, "")


def test_a_rating_splits_into_number_and_answers() -> None:
    assert parse(f"评价 {NUMBER} 已解决 满意") == Command("rate", NUMBER, "已解决 满意")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\n",
        "我家门口的路灯坏了",
        "查询一下我的诉求进度",  # starts with a command word, but is a sentence
        "受理了吗？",
        "帮助我一下",
        "SQ-20260101-0001",
        "请帮忙 受理 SQ-20260101-0001",
    ],
)
def test_ordinary_text_is_not_a_command(text: str) -> None:
    assert parse(text) is None


def test_a_to_do_page_is_the_first_argument_of_inbox() -> None:
    assert parse("待办 2") == Command("inbox", "2", "")
    assert parse("/inbox 3") == Command("inbox", "3", "")


def test_register_takes_the_text_to_register_or_nothing() -> None:
    assert parse("登记") == Command("register", "", "")
    assert parse("/register") == Command("register", "", "")
    assert parse("登记 停电 了") == Command("register", "停电", "了")


@pytest.mark.parametrize("text", ["登记一下我家漏水", "我想登记一件事"])
def test_register_glued_to_other_words_is_not_a_command(text: str) -> None:
    assert parse(text) is None
