"""The direct answer (monolithic mode): one model answers the whole question, no plan.

With corpora, it is single-step retrieval-augmented answering: one retrieval
for the whole question, and the model answers from those passages only (the
baseline a composed run's retrieval per step is measured against).

It is the baseline every comparison needs, so its record has the same shape
as a composed run's: one node, the same timings and token keys.
"""

from __future__ import annotations

import time

from complm_cli.cache.catalog import Expert
from complm_cli.compose import prompts
from complm_cli.compose.generate import Generation, generate_text
from complm_cli.compose.knowledge import read_answer
from complm_cli.compose.lists import room
from complm_cli.compose.plan import single_node
from complm_cli.compose.records import NodeResult
from complm_cli.compose.result import Result, judge
from complm_cli.compose.route import Route
from complm_cli.events import AnswerDone, AnswerToken, Listener, NodeSources, Stage


def answer_directly(question: str, model: Expert, pool, settings, on_event: Listener, cancel, start: float, *,
                    forced: bool = False, knowledge=None) -> Result:
    on_event(Stage("execute", "monolithic"))
    gen = model.generation
    t = time.perf_counter()
    hits = knowledge.retrieve_all(question) if knowledge else []
    if knowledge:
        on_event(NodeSources(1, hits))
        messages = prompts.reader_messages(question, [(h.title, h.text) for h in hits], step=False)
    else:
        messages = prompts.monolithic_messages(question)
    began: list[float] = []  # once the model is loaded: a node's seconds and tokens/s leave its load out
    if knowledge and not hits:  # nothing to read: the model could only invent an answer
        began.append(time.perf_counter())
        out = Generation(prompts.NOT_IN_CORPUS, 0, 0.0, None)
    else:
        out = generate_text(pool, settings, model, messages, max_tokens=room(question, gen.max_tokens),
                            temperature=gen.temperature, on_token=lambda p: on_event(AnswerToken(p)), cancel=cancel,
                            prefix=1, on_start=lambda: began.append(time.perf_counter()))
    answer, tokens = out.text, out.tokens
    end = time.perf_counter()
    seconds = end - t  # the phase, its load included, as a composed run's execute_s includes its nodes' loads
    # Empty (whitespace, or only a reasoning block) is no answer, as in the composed modes: exit 8, not 0.
    empty = not answer.strip()
    node = NodeResult(1, question, (), model.name, "failed" if empty else "done", answer,
                      "the model returned an empty answer" if empty else out.why_cut,
                      began[0] - start, end - began[0], tokens, settings.threads, cut=out.cut and not empty)
    if knowledge and not empty:
        answer, node.sources, node.not_found = read_answer(answer, hits)
        node.answer = answer
    status, reason = judge(answer, [node])
    routes = {1: Route(model.name, 1.0, {}, "forced" if forced else "monolithic")}
    wall = time.perf_counter() - start
    result = Result(question, "monolithic", answer, status, single_node(question), routes, [node],
                    {"plan_s": 0.0, "route_s": 0.0, "execute_s": seconds, "nodes_sum_s": node.seconds, "aggregate_s": 0.0,
                     "overlap_s": 0.0, "wall_s": wall},
                    {"plan": 0, "nodes": tokens, "aggregate": 0, "total": tokens}, False, [model.name], memory=pool.peak,
                    reason=reason)
    on_event(AnswerDone(answer, result))
    return result
