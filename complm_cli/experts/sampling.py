"""Each sequence's own sampler chain: its grammar, then greedy or sampled at its temperature and seed."""

from __future__ import annotations

from complm_cli.errors import ModelError


def sampler_for(llama, request):
    """A sampler chain for `request` on `llama` (a llama_adapter.Context); the caller frees it."""
    chain = llama.sampler()
    if request.grammar and not chain.add_grammar(request.grammar):
        chain.free()
        raise ModelError("The grammar does not parse (GBNF, with a rule named root).")
    if request.temperature <= 0:
        chain.add_greedy()
    else:  # llama-cpp-python's defaults for the rest, so sampled text reads as it did through Llama
        chain.add_top_k(40)
        chain.add_top_p(0.95, 1)
        chain.add_min_p(0.05, 1)
        chain.add_temp(request.temperature)
        chain.add_dist(request.seed & 0xFFFFFFFF)
    return chain
