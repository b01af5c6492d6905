"""Category detection: most matching keywords, then the longest keyword, then the fallback."""

from __future__ import annotations

from storage.models import Category
from workflow.routing import detect_category


def category(name: str, keywords: list[str], *, fallback: bool = False) -> Category:
    """A category as the database would hand it over (not stored)."""
    return Category(name=name, keywords=keywords, is_fallback=fallback)


def test_the_category_with_the_most_matching_keywords_wins() -> None:
    # Given two categories that both match
    lamps = category("市政设施", ["路灯", "井盖"])
    noise = category("噪音扰民", ["噪音"])

    # When a text hits two keywords of one and one of the other
    chosen = detect_category("路灯不亮，井盖也丢了，晚上还有噪音", [noise, lamps])

    # Then the one with more hits wins, whatever the order
    assert chosen is lamps


def test_more_hits_beat_a_longer_keyword() -> None:
    short = category("市政设施", ["路灯", "井盖"])
    long = category("施工扰民", ["夜间施工噪音扰民"])
    assert detect_category("夜间施工噪音扰民，路灯和井盖也坏了", [long, short]) is short


def test_a_tie_in_hits_goes_to_the_longest_matching_keyword() -> None:
    # Given one hit each, of different lengths
    general = category("环境卫生", ["垃圾"])
    specific = category("垃圾分类", ["垃圾分类点"])

    # Then the more specific (longer) keyword wins, in either order
    text = "小区垃圾分类点满了"
    assert detect_category(text, [general, specific]) is specific
    assert detect_category(text, [specific, general]) is specific


def test_a_full_tie_goes_to_the_category_defined_first() -> None:
    first = category("甲", ["停车"])
    second = category("乙", ["车位"])
    text = "停车难，车位不够"
    assert detect_category(text, [first, second]) is first
    assert detect_category(text, [second, first]) is second


def test_a_keyword_counts_once_however_often_it_appears() -> None:
    repeated = category("市政设施", ["路灯"])
    varied = category("环境卫生", ["垃圾", "污水"])
    assert detect_category("路灯路灯路灯，垃圾和污水", [repeated, varied]) is varied


def test_without_any_match_the_fallback_category_is_chosen() -> None:
    lamps = category("市政设施", ["路灯"])
    other = category("其他", [], fallback=True)
    assert detect_category("想咨询一下政策", [lamps, other]) is other


def test_the_first_fallback_is_chosen_when_several_are_marked() -> None:
    first = category("其他", [], fallback=True)
    second = category("综合", [], fallback=True)
    assert detect_category("想咨询一下政策", [first, second]) is first


def test_a_keyword_match_wins_over_the_fallback() -> None:
    other = category("其他", ["咨询"], fallback=True)
    lamps = category("市政设施", ["路灯"])
    assert detect_category("路灯坏了", [other, lamps]) is lamps
    # And a fallback category with keywords is chosen by them like any other
    assert detect_category("想咨询", [lamps, other]) is other


def test_without_match_or_fallback_there_is_no_category() -> None:
    lamps = category("市政设施", ["路灯"])
    assert detect_category("想咨询一下政策", [lamps]) is None
    assert detect_category("任何内容", []) is None


def test_an_empty_keyword_matches_nothing() -> None:
    # "" is "in" every string; it must not make a category match everything.
    blank = category("空白", [""])
    other = category("其他", [], fallback=True)
    assert detect_category("路灯坏了", [blank, other]) is other


def test_keywords_match_anywhere_in_the_text() -> None:
    lamps = category("市政设施", ["路灯"])
    assert detect_category("我家门口的路灯坏了三天", [lamps]) is lamps
    assert detect_category("路", [lamps]) is None
