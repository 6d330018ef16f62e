from complm_cli.compose import prompts


def test_planner_prompt_holds_every_example_then_the_question():
    messages = prompts.planner_messages("Who wrote Hamlet?")
    assert messages[0]["role"] == "system"
    assert len(messages) == prompts.planner_prefix_length() + 1
    assert messages[-1] == {"role": "user", "content": "Who wrote Hamlet?"}
    # the prefix is the same for every question, so its state can be cached
    assert prompts.planner_messages("x")[:-1] == messages[:-1]


def test_examples_are_valid_plans_for_their_questions():
    from complm_cli.compose.dag import validate
    from complm_cli.compose.plan import parse_plan, ungrounded

    for question, lines in prompts.PLANNER_EXAMPLES:
        parsed = parse_plan(question, lines)
        assert parsed.problems == [] and validate(parsed.plan, 6) == []
        assert ungrounded(parsed.plan, question) == []


def test_examples_show_calculations_and_lookups():
    from complm_cli.experts.calculator import to_formula
    from complm_cli.compose.plan import parse_plan

    kinds = set()
    for question, lines in prompts.PLANNER_EXAMPLES:
        for node in parse_plan(question, lines).plan.nodes:
            kinds.add(("formula" if to_formula(node.question) else "ask", bool(node.depends_on)))
    assert kinds == {("formula", True), ("formula", False), ("ask", True), ("ask", False)}


def test_expert_prompt_delimits_parent_answers():
    messages = prompts.expert_messages("In which country was Leonardo born?", [("Who painted the Mona Lisa?", "Leonardo da Vinci")])
    user = messages[-1]["content"]
    assert "<<<" in user and ">>>" in user and "Leonardo da Vinci" in user
    assert prompts.expert_messages("Q?", [])[-1]["content"] == "Q?"


def test_yes_no_hint_only_for_yes_no_questions():
    yes_no = prompts.aggregator_messages("Is Mars larger than Venus?", [("How big is Mars?", "6779 km")])
    count = prompts.aggregator_messages("How many legs do two spiders have?", [("How many legs has a spider?", "8")])
    assert "Yes or No" in yes_no[0]["content"]
    assert "Yes or No" not in count[0]["content"]


def test_missing_sub_answers_are_named():
    messages = prompts.aggregator_messages("Q?", [("A?", "a"), ("B?", None)])
    assert "missing" in messages[-1]["content"]


def test_strip_reasoning():
    assert prompts.strip_reasoning("<think>hmm, let me see</think>\nParis") == "Paris"
    assert prompts.strip_reasoning("<think>never closed") == ""
    assert prompts.strip_reasoning("Paris") == "Paris"
