"""ThinkFilter: `<think>` blocks out of the answer, however the stream is split."""

from __future__ import annotations

import copy
import itertools
import string
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from core.reasoning import CLOSE_TAG, OPEN_TAG, ThinkFilter

FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
LINE_BREAKS = str.maketrans("", "", "\r\n")


def run(chunks: list[str], *, continuing: bool = False, reasoning_first: bool = False) -> str:
    answer = ThinkFilter(continuing=continuing)
    if reasoning_first:
        answer.mark_reasoning()
    return "".join(answer.feed(c) for c in chunks) + answer.flush()


def every_split(stream: str) -> list[list[str]]:
    """The stream whole, and cut in two and in three at every pair of places."""
    splits = [[stream]]
    for i in range(len(stream) + 1):
        splits.append([stream[:i], stream[i:]])
        for j in range(i, len(stream) + 1):
            splits.append([stream[:i], stream[i:j], stream[j:]])
    return splits


class TestExamples:
    """The cases the rules name, each whole and split at every place."""

    def check(self, stream: str, expected: str, **kwargs: bool) -> None:
        for chunks in every_split(stream):
            assert run(chunks, **kwargs) == expected, chunks

    def test_block_before_the_answer(self) -> None:
        """The DeepSeek-R1 shape: the block, blank lines, the answer; the blank lines go too."""
        self.check("<think>Let me see. 2+2=4.</think>\n\nIt is 4.", "It is 4.")

    def test_several_blocks_anywhere(self) -> None:
        """Blocks mid-answer are cut out; the text around them stays as it was."""
        self.check("A<think>x</think> b<think>\ny\n</think> c", "A b c")

    def test_unclosed_block_is_hidden_to_the_end(self) -> None:
        """A block still open at the end hides the rest, a half-written closing tag included."""
        self.check("Answer.<think>more thoughts</thi", "Answer.")
        self.check("<think>only thinking", "")

    def test_stray_closing_tag_is_dropped(self) -> None:
        """A `</think>` with no block open is markup: dropped, the text around it shown."""
        self.check("thought leaked</think>\n\nAnswer", "thought leaked\n\nAnswer")
        self.check("</think>\n\nAnswer", "Answer")

    def test_lookalikes_are_text(self) -> None:
        """`<thinking>`, `<think >`, `<th`, a lone `<` and `a < b` are shown exactly."""
        for text in ["<thinking>x</thinking>", "<think >x", "x <th", "a < b", "<", "</thin", "<<think"]:
            self.check(text, text)

    def test_nested_opening_tag_is_hidden_text(self) -> None:
        """Inside a block a second `<think>` is just hidden text; the first `</think>` ends it."""
        self.check("<think>a <think> b</think>Answer</think>!", "Answer!")

    def test_tags_are_case_insensitive(self) -> None:
        """`<THINK>` and `</Think>` are tags too."""
        self.check("<THINK>x</Think>y", "y")

    def test_non_ascii_text_keeps_its_place(self) -> None:
        """Case folding never shifts the text: a character whose lowercase is longer stays put."""
        self.check("İ<think>x</think>İ", "İİ")
        self.check("<thın", "<thın")  # a dotless ı is not an ASCII i: no tag

    def test_text_without_tags_is_unchanged(self) -> None:
        """No tags: every character passes, leading whitespace included."""
        self.check("  indented\n\ncode  ", "  indented\n\ncode  ")
        self.check(" \n ", " \n ")

    def test_whitespace_before_the_block_goes_too(self) -> None:
        """Whitespace on either side of a block before the answer is dropped."""
        self.check(" \n<think>x</think>\n \nAnswer \n", "Answer \n")
        self.check("\n<think>x</think>\n\n<think>y</think>\n\nAnswer", "Answer")

    def test_after_a_block_mid_answer_whitespace_stays(self) -> None:
        """Only the answer's start is trimmed: later whitespace is the model's own."""
        self.check("One.<think>x</think>\n\nTwo.", "One.\n\nTwo.")

    def test_continuation_keeps_the_space_between_words(self) -> None:
        """A continuation drops only the line breaks after the block: `forty` + ` two` stays two words."""
        self.check("<think>carry on</think>\n\n two.", " two.", continuing=True)
        self.check("\n<think>x</think>\n\n", "", continuing=True)

    def test_separate_reasoning_trims_the_answer_start(self) -> None:
        """Reasoning from a delta field counts like a block before the answer."""
        self.check("\n\nHello", "Hello", reasoning_first=True)
        self.check("\n\nHello", "\n\nHello")

    def test_only_a_partial_tag_is_held_back(self) -> None:
        """Once the answer started, a chunk comes out whole unless it ends in a possible tag."""
        answer = ThinkFilter()
        assert answer.feed("Hello") == "Hello"
        assert answer.feed(" world <th") == " world "
        assert answer.feed("is") == "<this"
        assert answer.feed(" and <") == " and "
        assert answer.feed("/") == ""
        assert answer.feed("b>") == "</b>"
        assert answer.feed("x</thin") == "x"
        assert answer.flush() == "</thin"


# -- property tests --------------------------------------------------------------------------

# Characters that build tags, near-tags and whitespace, plus anything at all.
TRICKY = st.sampled_from([*"<>/thinkTHINK \n\r\t", "<think", "</think", "<thi", "İ"])
PIECE = st.one_of(TRICKY, st.characters(codec="utf-8"))


def _without(tags: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.lists(PIECE, max_size=12).map("".join).filter(
        lambda s: not any(tag in s.translate(FOLD) for tag in tags))


ANSWER_TEXT = _without((OPEN_TAG, CLOSE_TAG))
THINK_TEXT = _without((CLOSE_TAG,))  # a block may say `<think>`, it cannot say `</think>`


def any_case(tag: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(tag), max_size=len(tag)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(tag, upper, strict=True)))


@dataclass
class Stream:
    """A stream built from answer segments and what separates them, with its expected answer."""

    text: str
    expected: str
    expected_continuing: str


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    segments = [draw(ANSWER_TEXT)]
    text = segments[0]
    boundaries = 0
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["block", "block", "stray"]))
        if kind == "block":
            text += draw(any_case(OPEN_TAG)) + draw(THINK_TEXT) + draw(any_case(CLOSE_TAG))
        else:
            text += draw(any_case(CLOSE_TAG))
        boundaries += 1
        segment = draw(ANSWER_TEXT)
        segments.append(segment)
        text += segment
    if draw(st.booleans()):  # a block still open at the end
        text += draw(any_case(OPEN_TAG)) + draw(THINK_TEXT)
        boundaries += 1
    answer = "".join(segments)
    start = len(answer) - len(answer.lstrip())
    if boundaries == 0 or segments[0].strip():  # no tag before the answer's first character
        return Stream(text, answer, answer)
    lead, rest = answer[:start], answer[start:]
    return Stream(text, rest, lead.translate(LINE_BREAKS) + rest)


@st.composite
def split(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=8)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


class TestProperties:
    """For any answer, any reasoning and any split into chunks: exactly the answer comes out."""

    @settings(max_examples=200)
    @given(data=st.data(), stream=streams())
    def test_output_is_exactly_the_answer(self, data: st.DataObject, stream: Stream) -> None:
        """Tags split anywhere, several blocks, stray and unclosed ones: the answer, nothing else."""
        chunks = data.draw(split(stream.text))
        assert run(chunks) == stream.expected
        assert run(chunks, continuing=True) == stream.expected_continuing

    @settings(max_examples=150)
    @given(data=st.data(), stream=streams())
    def test_streaming_holds_back_only_a_possible_tag(self, data: st.DataObject, stream: Stream) -> None:
        """After every chunk: what came out plus what the end would release is the answer of the
        stream so far, and once the answer started the held-back part is shorter than a tag."""
        chunks = data.draw(split(stream.text))
        answer = ThinkFilter()
        shown = ""
        seen = ""
        for chunk in chunks:
            shown += answer.feed(chunk)
            seen += chunk
            held = copy.deepcopy(answer).flush()
            assert shown + held == run([seen])
            if answer.answered:
                assert len(held) < len(CLOSE_TAG)
        assert shown + answer.flush() == stream.expected

    @given(st.lists(st.text(alphabet=st.characters(blacklist_characters="<")), max_size=6),
           st.text(alphabet=string.ascii_letters, min_size=1))
    def test_text_without_a_bracket_streams_through_unheld(self, chunks: list[str], first: str) -> None:
        """With no `<` in it, an answer that has begun comes out chunk for chunk, nothing held."""
        answer = ThinkFilter()
        assert answer.feed(first) == first
        for chunk in chunks:
            assert answer.feed(chunk) == chunk
        assert answer.flush() == ""


def test_reasoning_shown_before_a_stray_close_is_measured() -> None:
    """How much visible text preceded a stray `</think>` (a template-opened block), split anywhere."""
    text = "plan it</think>\n\nAnswer."
    for cut in range(1, len(text)):
        f = ThinkFilter()
        shown = f.feed(text[:cut]) + f.feed(text[cut:]) + f.flush()
        assert shown == "plan it\n\nAnswer." and f.reasoning_shown == len("plan it")
    plain = ThinkFilter()
    plain.feed("no tags here")
    assert plain.reasoning_shown is None


class TestPromptOpenedBlock:
    """A model whose template opens `<think>` in the prompt: its stream starts inside the block."""

    def test_reasoning_before_the_close_is_never_shown(self) -> None:
        text = "let me plan <b>this</b></think>\n\nAnswer."
        for cut in range(1, len(text)):
            f = ThinkFilter(opened=True)
            shown = f.feed(text[:cut]) + f.feed(text[cut:]) + f.flush()
            assert shown == "Answer." and f.closed_opened

    def test_an_answer_without_reasoning_is_released_whole_at_the_end(self) -> None:
        f = ThinkFilter(opened=True)
        assert f.feed("No reasoning ") == "" and f.feed("today.") == ""
        assert f.flush() == "No reasoning today." and not f.closed_opened

    def test_cut_off_while_reasoning_stays_hidden(self) -> None:
        f = ThinkFilter(opened=True)
        f.feed("still thinking about")
        assert f.flush(release_opened=False) == ""
