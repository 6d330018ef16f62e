"""Where an intermediate answer has stated a fact (facts.FactWatch), and its key facts."""

import pytest

from complm_cli.compose.facts import FactWatch, key_facts


@pytest.mark.parametrize(("text", "question", "head"), [
    ("Vincent van Gogh painted The Starry Night in 1889. It is a large oil painting ", "Who painted The Starry Night?",
     "Vincent van Gogh painted The Starry Night in 1889."),
    ("Yes, Christopher Nolan is a film director. He has directed", "Is Christopher Nolan a film director?",
     "Yes, Christopher Nolan is a film director."),
    # a preamble states nothing: the answer goes on to the sentence that does
    ("Sure! Here is the answer. The capital is Ottawa. More", "What is the capital of Canada?",
     "Sure! Here is the answer. The capital is Ottawa."),
    ("The capital of the U.S. is Washington. It", "What is the capital of the U.S.?", "The capital of the U.S. is Washington."),
    ("A spider has 8 legs. Spiders", "How many legs does a spider have?", "A spider has 8 legs."),
    ("It is about 3.5 kilometres long. The", "How long is the bridge?", "It is about 3.5 kilometres long."),
    ('He said "Paris is the capital." Then', "What did he say?", 'He said "Paris is the capital."'),
    # initials and abbreviations end no sentence (a cut at "Dr. John E." lost the name)
    ("The first president was Dr. John E. Smith. He", "Who was the first president?", "The first president was Dr. John E. Smith."),
    # a fact of the wrong kind goes on: "who" asks for a name, a quantity or a date for a number
    ("The Starry Night was painted in 1889. It was painted by Vincent van Gogh. It", "Who painted The Starry Night?",
     "The Starry Night was painted in 1889. It was painted by Vincent van Gogh."),
    ("Mozart was a composer from Salzburg. He was born in 1756. He", "When was Mozart born?",
     "Mozart was a composer from Salzburg. He was born in 1756."),
    ("He served as Gen. Patton's aide in 1944. Later", "Whom did he serve?", "He served as Gen. Patton's aide in 1944."),
    ("The answer is Paris, i.e. the capital. Next", "What is the capital?", "The answer is Paris, i.e. the capital."),
])
def test_an_answer_ends_after_the_first_sentence_that_states_a_fact(text, question, head) -> None:
    end = FactWatch(question).end(text)
    assert end is not None and text[:end] == head
    # the scheduler feeds the answer as it grows, a character at a time at worst: the same cut
    watch = FactWatch(question)
    grown = next(e for i in range(1, len(text) + 1) if (e := watch.end(text[:i])) is not None)
    assert grown == end


@pytest.mark.parametrize(("text", "question"), [
    ("The Bubye River is located in Burundi.", "Where is the Bubye River?"),  # no space after it yet: maybe "Burundi.5"
    ("It is a river in the south of the country. It", "Where is the Bubye River?"),  # no name, no number
    ("1. Paris\n2. Rome ", "Name two capitals?"),  # lines of their own are kept whole
    ("```python\ndef f(): pass\n```\nIt is Python 3. More", "Write a function."),
    ("<think>The user asks. Paris is.</think> Paris is the capital. More", "What is the capital of France?"),
    ("Yes. Paris. More", "Is Paris the capital of France?"),  # too short to be a sentence
    ("Christopher Nolan directed Inception in 2010. He", "Is Christopher Nolan a film director?"),  # no Yes or No
])
def test_no_cut_where_nothing_is_stated_or_the_shape_is_not_prose(text, question) -> None:
    assert FactWatch(question).end(text) is None


def test_key_facts_are_numbers_first_then_new_names() -> None:
    assert key_facts("Mozart was born in 1756.", "When was Mozart born?") == {"1756"}
    assert key_facts("The Mona Lisa was painted by Leonardo da Vinci.", "Who painted the Mona Lisa?") == {"Leonardo", "Vinci"}
