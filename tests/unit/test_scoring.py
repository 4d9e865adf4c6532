"""Rule metrics on hand-written cases, thinking output and choice letters."""
import pytest

from swaa.evaluation.scoring import (choice_letter, contains, exact_match, normalize, score_response, strip_thinking,
                          token_f1)


@pytest.mark.parametrize("text, want", [
    ("<think>let me see... 42?</think>The answer is 7.", "The answer is 7."),
    ("<think>a</think> x <think>b</think> y", "x  y".replace("  ", " ")),
    ("reasoning without an opening tag</think>\n\nParis", "Paris"),
    ("<think>still thinking when tokens ran out", ""),
    ("no thinking at all", "no thinking at all"),
])
def test_strip_thinking(text, want):
    assert " ".join(strip_thinking(text).split()) == want


def test_rule_metrics():
    assert normalize("The  Answer, is: 42!") == "answer is 42"
    assert exact_match("<think>hmm</think> 4567890.", "4567890") == 1.0
    assert exact_match("It is 4567890", "4567890") == 0.0
    assert contains("The special magic number is 4567890.", "4567890") == 1.0
    assert contains("<think>4567890</think> I do not know", "4567890") == 0.0     # thinking does not count
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(2 * (2 / 2) * (2 / 3) / (1 + 2 / 3))
    assert token_f1("", "x") == 0.0 and token_f1("", "") == 1.0


@pytest.mark.parametrize("response, letter", [
    ("B", "B"), ("(C)", "C"), ("The answer is (D).", "D"), ("Answer: A", "A"), ("answer is **B**", "B"),
    ("C. The second sentence", "C"), ("<think>Maybe A? No.</think>The correct answer is (B)", "B"),
    ("I think the sentence is option D because", "D"), ("none of them", None),
])
def test_choice_letter(response, letter):
    assert choice_letter(response) == letter


def test_score_response_multiple_choice_and_free_text():
    assert score_response("The answer is (B)", "B", choices=["a", "b", "c", "d"])["exact_match"] == 1.0
    assert score_response("The answer is (B)", "C", choices=["a", "b", "c", "d"])["contains"] == 0.0
    s = score_response("It is 123, 456", "123, 456")
    assert s == {"exact_match": 0.0, "contains": 1.0, "token_f1": pytest.approx(2 / 3)}   # p=2/4, r=2/2
