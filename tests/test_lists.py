"""Questions that list things: the items found, how many parts, and a long list split into steps."""

import pytest

from complm_cli.compose.lists import list_items, parts, room, split_long_list


@pytest.mark.parametrize("question, items", [
    ("What are the capitals of France, Spain and Italy?", ["France", "Spain", "Italy"]),
    ("What are the capitals of France, Spain, and Italy?", ["France", "Spain", "Italy"]),
    ("List the chemical symbols for gold, silver, iron & tin.", ["gold", "silver", "iron", "tin"]),
    ("Name the authors of Hamlet, War and Peace, and Emma.", ["Hamlet", "War and Peace", "Emma"]),
])
def test_the_items_of_a_list_are_found(question, items):
    assert list_items(question)[1] == items and parts(question) == len(items)


@pytest.mark.parametrize("question", [
    "Who painted the Mona Lisa, and what is the largest ocean on Earth?",  # two clauses, not a list
    "Which is heavier, an elephant or a hippo?",
    "What are the capitals of France and Spain?",  # two items: the planner's
    "Tom buys 3 notebooks at $4 each, a pen for $2, and pays with a $20 bill. How much change does he get?",
    "In 2020, who won the elections held in France, Spain and Italy that spring?",
])
def test_what_is_not_a_list_of_three_or_more_is_one_part(question):
    assert parts(question) == 1 and split_long_list(question, 6) is None


def test_a_short_list_is_left_to_the_planner():
    assert split_long_list("What are the capitals of " + ", ".join("ABCDEFG") + "?", 6) is None


@pytest.mark.parametrize("count, steps", [(8, 3), (18, 6), (30, 6), (60, 6)])
def test_a_long_list_becomes_at_most_six_steps_that_cover_every_item_once(count, steps):
    items = [f"Item{i}" for i in range(count)]
    question = f"What are the colours of {', '.join(items[:-1])} and {items[-1]}?"
    split = split_long_list(question, 6)
    assert len(split) == steps
    assert all(s.startswith("What are the colours of ") and s.endswith("?") for s in split)
    assert [w.strip(",?") for s in split for w in s.split() if w.startswith("Item")] == items


def test_room_grows_with_the_parts_and_is_bounded():
    assert room("What is the capital of Ghana?", 256) == 256
    assert room("What are the capitals of " + ", ".join(f"C{i}" for i in range(20)) + " and D?", 256) == 24 * 21 + 64
    assert room("What are the capitals of " + ", ".join(f"C{i}" for i in range(300)) + " and D?", 256) == 2048
