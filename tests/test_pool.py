"""The ModelPool: reuse, loading beside a busy worker, shared parts counted once, LRU eviction, the budget, waits and cancel."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from complm_cli.compose.cancel import Cancelled
from complm_cli.compose.pool import ModelPool
from complm_cli.errors import ModelError
from tests.helpers import (WAIT, Fake, FakeWorker, expert, pool_for)



# --- the model pool -----------------------------------------------------------------------------


def test_pool_reuses_an_idle_worker_of_the_same_expert() -> None:
    fake = Fake()
    pool = pool_for(fake)
    a = pool.acquire(expert("a"))
    pool.release(a)
    again = pool.acquire(expert("a"))
    assert again is a
    assert pool.loads == 1 and fake.loads == ["a"] and fake.created == ["a"]
    pool.release(again)


def test_pool_loads_a_second_worker_when_the_first_is_busy() -> None:
    fake = Fake()
    pool = pool_for(fake)
    one, two = pool.acquire(expert("a")), pool.acquire(expert("a"))
    assert one is not two
    assert fake.created == ["a", "a"]
    assert pool.loads == 2 and pool.used == 200 and pool.peak == 200
    assert pool.resident() == ["a", "a"]


def test_a_shared_part_counts_once_and_stays_counted_after_its_first_holder_goes() -> None:
    """Two handles on one engine charge the engine once; evicting the handle that brought it
    in must not leave the other one counted as if the engine were gone."""
    fake = Fake()
    made = []

    def factory(exp, path):
        w = FakeWorker(fake, exp, path)
        w.memory, w.shared = 10, ("engine-a", 1000)
        made.append(w)
        return w

    pool = ModelPool(factory, lambda e: Path("/models") / e.name, budget=1030)
    one, two = pool.acquire(expert("a")), pool.acquire(expert("a"))
    assert pool.used == 1020
    pool.release(one)
    with pool._cond:  # evict the first holder, as the LRU rule would
        del pool._idle[id(one)]
        one.unload()
    assert pool.used == 1010  # the engine is still resident through `two`
    three = pool.acquire(expert("a"))  # fits: 1000 + 10 + 10
    assert pool.used == 1020
    pool.release(two)
    pool.release(three)


def test_pool_evicts_the_least_recently_used_idle_worker() -> None:
    fake = Fake()
    pool = pool_for(fake, budget=250)
    for name in ("a", "b", "a"):  # a was used last, so b is the least recently used
        pool.release(pool.acquire(expert(name)))
    assert fake.loads == ["a", "b"]
    c = pool.acquire(expert("c"))
    assert fake.unloads == ["b"]
    assert pool.evictions == 1
    assert sorted(pool.resident()) == ["a", "c"]
    assert pool.used == 200 <= pool.budget
    pool.release(c)
    pool.close()
    assert sorted(fake.unloads) == ["a", "b", "c"] and pool.resident() == []


def test_pool_refuses_a_model_larger_than_the_budget() -> None:
    fake = Fake(memory={"huge": 1_000})
    pool = pool_for(fake, budget=500)
    with pytest.raises(ModelError, match="more than the memory budget"):
        pool.acquire(expert("huge"))
    assert fake.loads == [] and pool.used == 0
    pool.release(pool.acquire(expert("small")))  # the pool is still usable
    assert fake.loads == ["small"]


def test_pool_forgets_a_worker_whose_load_failed() -> None:
    fake = Fake(load_error={"bad": ModelError("cannot load")})
    pool = pool_for(fake, budget=100)
    with pytest.raises(ModelError, match="cannot load"):
        pool.acquire(expert("bad"))
    assert pool.used == 0 and pool.resident() == []
    pool.release(pool.acquire(expert("good")))  # its memory was given back
    assert fake.loads == ["good"]


def test_pool_acquire_waits_for_a_busy_worker_to_be_released() -> None:
    fake = Fake()
    pool = pool_for(fake, budget=150)  # one model at a time
    a = pool.acquire(expert("a"))
    got = threading.Event()
    out: dict = {}

    def take_b() -> None:
        out["b"] = pool.acquire(expert("b"))
        got.set()

    thread = threading.Thread(target=take_b)
    thread.start()
    assert not got.wait(0.3), "acquire did not wait for memory"
    assert fake.loads == ["a"] and fake.unloads == []
    pool.release(a)
    assert got.wait(WAIT)
    thread.join(WAIT)
    assert fake.unloads == ["a"] and fake.loads == ["a", "b"]
    assert pool.resident() == ["b"] and pool.used == 100
    pool.release(out["b"])


def test_pool_acquire_gives_up_waiting_when_cancelled() -> None:
    fake = Fake()
    pool = pool_for(fake, budget=150)
    a = pool.acquire(expert("a"))
    cancel = threading.Event()
    raised = threading.Event()

    def take_b() -> None:
        with pytest.raises(Cancelled):
            pool.acquire(expert("b"), cancel)
        raised.set()

    thread = threading.Thread(target=take_b)
    thread.start()
    cancel.set()
    thread.join(WAIT)
    assert raised.is_set()
    assert fake.loads == ["a"] and pool.resident() == ["a"]
    pool.release(a)
