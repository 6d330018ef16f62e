"""Query Executor: run a plan, or nodes fed while the planner writes, on the model pool.

The Scheduler (scheduler.py) does the work; the ModelPool (pool.py) keeps the
models resident within a memory budget.
"""

from __future__ import annotations

from complm_cli.cache.catalog import Expert
from complm_cli.compose.dag import Plan
from complm_cli.compose.records import Execution, RunOptions
from complm_cli.compose.scheduler import NodeFeed, Scheduler
from complm_cli.events import Listener, ignore


def run_plan(plan: Plan, experts: dict[int, Expert], pool, options: RunOptions,
             on_event: Listener = ignore, cancel=None) -> Execution:
    """Run every node of `plan` on its expert; `experts` maps node id to the routed expert."""
    feed = NodeFeed(plan.question)
    feed.close([(n, experts[n.id]) for n in plan.nodes])
    return run_feed(feed, pool, options, on_event, cancel)


def run_feed(feed: NodeFeed, pool, options: RunOptions, on_event: Listener = ignore, cancel=None) -> Execution:
    """Run nodes as they are fed, each once its parents are done, until the feed is closed and every node has ended."""
    return Scheduler(feed, pool, options, on_event, cancel).run()
