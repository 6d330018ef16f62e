"""Sub-query Generator: the planner model writes the plan, which is parsed into a DAG.

The planner's instructions and examples are a prefix every call shares
(evaluated once, kept on disk); its words are guessed from the question's
clauses and checked by the model (drafts.py); a reply that only copies the
question, or a plan that is finished, stops it early. `on_text` sees the reply
grow, so that steps can run while the rest is written (overlap.py).
"""

from __future__ import annotations

import json

from complm_cli.cache.catalog import Expert
from complm_cli.cache.config import Settings
from complm_cli.compose import dag, prompts
from complm_cli.compose.dag import Plan
from complm_cli.compose.drafts import PlanDraft
from complm_cli.compose.generate import generate_text
from complm_cli.compose.plan import MAX_PLAN_TOKENS, copies_question, make_plan, plan_finished


class Planner:
    def __init__(self, expert: Expert, pool, settings: Settings):
        self.expert, self.pool, self.settings = expert, pool, settings

    def plan(self, question: str, cancel=None, on_text=None) -> Plan:
        """`on_text(reply so far)` sees the planner's reply grow, token by token."""
        # The planner sees the user's own braces and #N escaped (see dag.escape_user); the
        # plan's steps keep them escaped until they are sent to an expert or shown.
        escaped = dag.escape_user(question)

        def stop(partial: str) -> bool:
            if on_text is not None:
                on_text(partial)
            return copies_question(partial, escaped) or plan_finished(partial)

        def generate(messages: list[dict]) -> tuple[str, int]:
            text, tokens = generate_text(self.pool, self.settings, self.expert, messages, max_tokens=MAX_PLAN_TOKENS,
                                         temperature=0.0, cancel=cancel, prefix=prompts.planner_prefix_length(),
                                         stop=stop, draft=PlanDraft(escaped) if self.settings.draft else None)
            if copies_question(text, escaped):
                text = json.dumps({"steps": [{"q": escaped, "deps": []}]})
            return text, tokens

        plan = make_plan(escaped, generate)
        plan.question = question
        return plan
