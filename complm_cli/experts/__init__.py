"""Where text is generated. The scheduler only knows the Worker interface."""

from __future__ import annotations


def dispatch(local):
    """A worker factory: a RemoteWorker for an expert with an endpoint, `local`'s worker otherwise."""

    def make(expert, path):
        if expert.remote is not None:
            from complm_cli.experts.remote import RemoteWorker

            return RemoteWorker(expert)
        return local(expert, path)

    make.local = local  # benchmarks reach the engines through it
    return make


def default_factory(settings):
    """What a Session uses unless told otherwise: llama.cpp in this process, or the expert's endpoint."""
    from complm_cli.experts.engine import default_slots
    from complm_cli.experts.llama import llama_factory

    return dispatch(llama_factory(settings.gpu_layers, settings.cache_dir / "prompt-states",
                                  threads=settings.threads, slots=default_slots(settings.worker_count())))
