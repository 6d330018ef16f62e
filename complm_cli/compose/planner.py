"""Sub-query Generator: the planner model writes the plan, which is parsed into a DAG.

The planner's instructions and examples are a prefix every call shares
(evaluated once, kept on disk); its words are guessed from the question's
clauses and checked by the model (drafts.py); a reply that only copies the
question, or a plan that is finished, stops it early. `on_text` sees the reply
grow, so that steps can run while the rest is written (overlap.py).

A question a tool claims whole ("How many days are there between
2024-01-15 and 2024-03-01?", "What is 15% of 80?") is not planned: it is
its own one step, which the tool computes. The planner model would only
split it into look-ups of what the question already gives. A question that
asks the same thing of a long list is split into steps of a few items each
without the planner (lists.py). A plan made of calculations alone (a word
problem) is written more than once, and the value most plans compute wins
(votes.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from complm_cli.cache.catalog import Expert
from complm_cli.cache.config import Settings
from complm_cli.compose import dag, prompts, votes
from complm_cli.compose.cancel import Cancelled
from complm_cli.compose.dag import Node, Plan
from complm_cli.compose.drafts import PlanDraft
from complm_cli.compose.generate import generate_text
from complm_cli.compose.lists import split_long_list
from complm_cli.events import Listener, Stage, ignore
from complm_cli.compose.plan import MAX_NODES, MAX_PLAN_TOKENS, copies_question, make_plan, plan_finished, single_node


class Planner:
    def __init__(self, expert: Expert, pool, settings: Settings, claimed: Callable[[str], bool] = lambda question: False,
                 tools: list = ()):
        """`claimed(question)`: whether a tool computes the whole question (Routing.claims); `tools`: the
        catalog's (expert, Tool) pairs (Routing.tools), which compute the plans that vote."""
        self.expert, self.pool, self.settings, self.claimed = expert, pool, settings, claimed
        self.tools = list(tools)

    def plan(self, question: str, cancel=None, on_text=None, on_event: Listener = ignore) -> Plan:
        """`on_text(reply so far)` sees the planner's reply grow, token by token; `on_event` is told when
        a vote's sampled plans are written (a Stage 'vote')."""
        # The planner sees the user's own braces and #N escaped (see dag.escape_user); the
        # plan's steps keep them escaped until they are sent to an expert or shown.
        escaped = dag.escape_user(question)
        if self.claimed(escaped):
            plan = single_node(escaped)
            plan.question = question
            return plan
        steps = split_long_list(escaped, MAX_NODES)
        if steps:
            return Plan(question, [Node(i, step, ()) for i, step in enumerate(steps, 1)])

        start = time.perf_counter()
        draft = PlanDraft(escaped) if self.settings.draft else None
        plan = make_plan(escaped, self._writer(escaped, cancel, on_text=on_text, draft=draft))
        plan.question = question
        chosen, tally = votes.vote(plan, lambda k: self._sample(question, escaped, k, cancel), self.settings.votes,
                                   self.tools, lambda count: on_event(Stage("vote", f"{count} more plans")))
        if tally is not None:
            chosen.votes = tally.to_dict()
            chosen.seconds = time.perf_counter() - start
            chosen.tokens = tally.tokens
        return chosen

    def _writer(self, escaped: str, cancel, *, on_text=None, draft=None, temperature: float = 0.0,
                seed: int | None = None) -> Callable[[list[dict]], tuple[str, int]]:
        """What make_plan calls to have the planner write: greedy (with `on_text` and `draft`) or sampled."""
        def stop(partial: str) -> bool:
            if on_text is not None:
                on_text(partial)
            return copies_question(partial, escaped) or plan_finished(partial)

        def generate(messages: list[dict]) -> tuple[str, int]:
            out = generate_text(self.pool, self.settings, self.expert, messages, max_tokens=MAX_PLAN_TOKENS,
                                temperature=temperature, seed=seed, cancel=cancel,
                                prefix=prompts.planner_prefix_length(), stop=stop, draft=draft)
            text, tokens = out.text, out.tokens
            if copies_question(text, escaped):
                text = json.dumps({"steps": [{"q": escaped, "deps": []}]})
            return text, tokens

        return generate

    def _sample(self, question: str, escaped: str, k: int, cancel) -> Plan:
        """The k-th sampled plan of a vote; one that could not be written (a timeout) votes for nothing."""
        try:
            plan = make_plan(escaped, self._writer(escaped, cancel, temperature=votes.TEMPERATURE,
                                                   seed=self.settings.seed + k))
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - a sample is extra: the greedy plan stands without it
            plan = single_node(escaped, f"a sampled plan failed ({exc})")
        plan.question = question
        return plan
