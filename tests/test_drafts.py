"""Guesses of copied words (drafts.py): what is guessed where, and where nothing is."""

from __future__ import annotations

import pytest

from complm_cli.compose.drafts import PlanDraft, clauses

from tests.conftest import TINY_CATALOG

FAN_OUT = "Who painted the Mona Lisa, and what is the chemical symbol for gold?"
LINE1 = 'painter = ask("Who painted the Mona Lisa?")\n'


def parts(question: str) -> list[str]:
    return [question[a:b] for a, b in clauses(question)]


def test_a_list_of_questions_splits_at_its_questions_and_keeps_commas_inside_one():
    assert parts(FAN_OUT) == ["Who painted the Mona Lisa", "what is the chemical symbol for gold"]
    assert parts("What is the capital of Canada, what is the largest planet, and who wrote 1984?") == [
        "What is the capital of Canada", "what is the largest planet", "who wrote 1984"]
    assert parts("Who is the oldest, Sid Haig or Vic Darchinyan?") == ["Who is the oldest, Sid Haig or Vic Darchinyan"]
    assert parts("Tom has 3 apples. How many does he have?") == ["Tom has 3 apples", "How many does he have"]


def test_a_fan_out_line_is_guessed_whole_once_its_name_is_written():
    draft = PlanDraft(FAN_OUT)
    assert draft("painter =") == ' ask("Who painted the Mona Lisa?")\n'  # a newline: another question waits
    assert draft("painter = ask") == '("Who painted the Mona Lisa?")\n'
    assert draft(LINE1 + "symbol =") == ' ask("What is the chemical symbol for gold?")'  # the last: no newline
    assert draft(LINE1 + 'symbol = ask("What is the chemical sym') == 'bol for gold?")'


def test_a_clause_the_model_begins_is_guessed_to_its_end_even_out_of_order():
    draft = PlanDraft(FAN_OUT)
    assert draft('gold = ask("What') == ' is the chemical symbol for gold?")\n'
    assert draft(LINE1 + 'x = ask("Who') == ""  # that clause is asked already; "Who" matches no other


def test_nothing_is_guessed_for_names_formulas_references_or_when_every_question_is_asked():
    draft = PlanDraft(FAN_OUT)
    assert draft("") == "" and draft("paint") == "" and draft("painter") == ""
    assert draft("total = 3 * spider_legs +") == ""
    done = LINE1 + 'symbol = ask("What is the chemical symbol for gold?")\n'
    assert draft(done + "both =") == ""
    chain = PlanDraft("In which country was the painter of The Starry Night born?")
    assert chain('painter = ask("Who painted The Starry Night?")\ncountry = ask("In which country was {paint') == ""


def test_a_single_question_is_guessed_only_once_the_model_copies_it():
    draft = PlanDraft("What is the capital of Japan?")
    assert draft("capital =") == "" and draft("capital = ask") == "" and draft('capital = ask("') == ""
    assert draft('capital = ask("What') == ""  # one word could start a rephrased step
    assert draft('capital = ask("What is') == ' the capital of Japan?")'


def test_a_later_step_of_a_chain_is_not_guessed_as_the_whole_question():
    q = "In which country was the painter of The Starry Night born?"
    draft = PlanDraft(q)
    first = 'painter = ask("Who painted The Starry Night?")\n'
    # It goes on with {painter}, not with the question's words: a two-word guess, not the whole question.
    assert draft(first + 'country = ask("In which country') == " was the"


def test_a_word_problem_statement_is_never_guessed_as_a_question():
    draft = PlanDraft("Tom buys 3 notebooks at $4 each. Who sells notebooks, and what is a pen?")
    assert draft("cost =").startswith(' ask("Who sells notebooks?")')
    assert PlanDraft("Tom buys 3 notebooks at $4 each. How much does he pay?")("cost =") == ""


def test_relative_clauses_and_the_statements_of_a_word_problem_are_no_questions_to_guess():
    dvd = PlanDraft("Steve bought a DVD, which cost him $5, and a book. How much did he pay in total?")
    assert parts(dvd.question) == ["Steve bought a DVD, which cost him $5, and a book", "How much did he pay in total"]
    assert dvd("total =") == ""  # one question: the lines are formulas
    rain = PlanDraft("When it rains, the roof leaks 2 ounces a minute. How many ounces leak in an hour, and what "
                     "is that in cups?")
    assert [rain.question[a:b] for a, b in rain.asks] == ["How many ounces leak in an hour", "what is that in cups"]
    assert rain("ounces =") == ' ask("How many ounces leak in an hour?")\n'


def test_the_model_s_own_words_lead_to_a_few_of_the_question_s_words_then_more_while_they_are_kept():
    q = "Who was the first president of the association which published Journal of Psychotherapy Integration?"
    draft = PlanDraft(q)
    text = 'assoc = ask("What was the'
    first = draft(text)
    assert first == " first president"  # two words at first
    text += first + " of"
    second = draft(text)
    assert second == " the association which published"  # all kept: twice as many
    text += " the association that"  # the model left the question's words
    assert draft(text) == ""
    draft2 = PlanDraft(q)
    draft2('a = ask("What was the')
    assert draft2('a = ask("What was the first leader of the association') == " which published"  # a miss: two again


def test_a_name_is_completed_but_a_common_word_is_not():
    draft = PlanDraft("What is the name of the waterfall in the country where the Bubye River is found?")
    assert draft('country = ask("Which country has the Bub') == "ye River is"
    nolan = PlanDraft("Are Christopher Nolan and Sathish Kalathil both film directors?")
    assert nolan('nolan = ask("Is Christopher Nolan a film director') == ""  # "directors" or "director"?
    assert nolan('nolan = ask("Is Christopher Nolan a') == ""  # "a" is no start of "and"


# --- who guesses: the planner, nothing else -------------------------------------------


def test_only_the_planner_guesses_never_a_step_the_aggregator_or_a_direct_answer(tmp_path):
    from complm_cli.compose import prompts
    from tests.helpers import Fake, FakeWorker, fake_session

    drafters: dict[str, object] = {}

    class Worker(FakeWorker):
        drafts = True

        def stream(self, messages, *, draft=None, **kwargs):
            system, content = messages[0]["content"], messages[-1]["content"]
            key = ("planner" if system == prompts.PLANNER_SYSTEM else "aggregator" if system.startswith(prompts.AGGREGATOR_SYSTEM)
                   else "dependent" if content.startswith("Facts from earlier steps") else content)
            drafters[key] = draft
            return super().stream(messages, **kwargs)

    question = "Was the painter of The Starry Night born in the same country as the author of Hamlet?"
    plan = ('painter = ask("Who painted The Starry Night?")\nborn = ask("In which country was {painter} born?")\n'
            'author = ask("Who wrote Hamlet?")')
    fake = Fake(answers={question: plan, "Who painted The Starry Night?": "Vincent van Gogh.",
                         "Who wrote Hamlet?": "William Shakespeare."}, tokens=1, sleep=0.0)
    fake.respond = lambda messages: "No." if messages[0]["content"].startswith(prompts.AGGREGATOR_SYSTEM) else None
    fake.factory = lambda exp, path: Worker(fake, exp, path)
    with fake_session(tmp_path, fake) as session:
        session.ask(question)
        assert isinstance(drafters.pop("planner"), PlanDraft)
        assert {"aggregator", "dependent", "Who wrote Hamlet?"} <= set(drafters)
        assert set(drafters.values()) == {None}
        drafters.clear()
        session.ask(question, mode="monolithic")
        assert list(drafters.values()) == [None]
        drafters.clear()
        session.settings = session.settings.replace(draft=False)
        session.ask(question)
        assert "planner" in drafters and set(drafters.values()) == {None}


@pytest.mark.model
def test_the_real_planner_keeps_guessed_words_and_writes_the_plan_it_writes_without_them(models, monkeypatch):
    from complm_cli.experts import engine
    from complm_cli.cache.config import load_settings
    from complm_cli.compose.session import Session

    kept: list[tuple[int, int]] = []
    check = engine.Engine._check

    def spy(self, slot, index, guess):
        before = slot.sequence.accepted
        check(self, slot, index, guess)
        kept.append((slot.sequence.accepted - before, len(guess)))

    monkeypatch.setattr(engine.Engine, "_check", spy)
    question = "Who painted the Mona Lisa, and what is the chemical symbol for gold?"
    with Session(load_settings(flags={"catalog": TINY_CATALOG}), pull=False) as session:
        session.settings = session.settings.replace(draft=False)
        plain = session.plan(question)
        assert kept == []
        session.settings = session.settings.replace(draft=True)
        guessed = session.plan(question)
    assert [(n.question, n.depends_on) for n in guessed.nodes] == [(n.question, n.depends_on) for n in plain.nodes]
    assert guessed.tokens == plain.tokens
    assert kept and sum(k for k, _ in kept) > 0
