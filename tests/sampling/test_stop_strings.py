"""StopStringMatcher: stop strings and their partial prefixes never reach the stream."""

import pytest

from esurge_core.sampling import StopStringMatcher


def stream(matcher, deltas):
    emitted, result = [], None
    for delta in deltas:
        result = matcher.feed(delta)
        emitted.append(result.text)
        if result.stopped:
            break
    return emitted, result


def test_text_without_stop_strings_passes_through():
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("hello world").text == "hello world"


def test_no_stop_strings_means_no_hold_back():
    assert StopStringMatcher([]).feed("abc S").text == "abc S"


def test_stop_string_inside_one_delta_truncates_before_it():
    result = StopStringMatcher(["STOP"]).feed("hello STOP world")
    assert (result.text, result.stopped, result.stop_string) == ("hello ", True, "STOP")


def test_include_stop_str_in_output_emits_the_stop_string():
    result = StopStringMatcher(["STOP"], include_stop_str_in_output=True).feed("hi STOP there")
    assert (result.text, result.stopped) == ("hi STOP", True)


def test_partial_prefix_is_held_back_then_released_when_it_diverges():
    matcher = StopStringMatcher(["STOP"])
    first = matcher.feed("hello ST")
    assert first.text == "hello " and matcher.held_text == "ST"
    second = matcher.feed("ART")
    assert (second.text, second.stopped) == ("START", False)


def test_stop_string_split_across_deltas_never_leaks():
    emitted, result = stream(StopStringMatcher(["<END>"]), ["abc <", "E", "N", "D> tail"])
    assert result.stopped
    assert "".join(emitted) == "abc "
    assert all("<" not in text for text in emitted)


@pytest.mark.parametrize("split", [1, 2, 3, 5, 100])
def test_result_does_not_depend_on_how_text_is_split(split):
    text = "one two thrxx three four"
    deltas = [text[i : i + split] for i in range(0, len(text), split)]
    emitted, result = stream(StopStringMatcher(["three", "thr", "xx t"]), deltas)
    assert "".join(emitted) == "one two "
    assert result.stop_string == "thr"


def test_first_completed_stop_string_wins():
    # "b" completes before "abc" does, so a character stream would stop at "b".
    result = StopStringMatcher(["abc", "b"]).feed("xabc")
    assert (result.text, result.stop_string) == ("xa", "b")


def test_flush_releases_held_text_when_request_ends_otherwise():
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("the end ST").text == "the end "
    assert matcher.flush() == "ST"
    assert matcher.held_text == ""


def test_allow_stop_false_emits_complete_stop_strings_as_text():
    matcher = StopStringMatcher(["ab"])
    result = matcher.feed("xaby a", allow_stop=False)
    assert (result.text, result.stopped, matcher.held_text) == ("xaby ", False, "a")
    assert matcher.feed("b").stopped


def test_empty_stop_string_is_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        StopStringMatcher(["ok", ""])
