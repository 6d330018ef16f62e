"""Aggregate decode speed of the batched engine: 1 to 4 sequences decoded together
against the same sequences one after another, for each default model.

    python bench/batching.py [--tokens 64] [--max-seqs 4] [--threads T] [--gpu-layers N] [--models a,b]

Each row: n sequences of the same length (greedy, `--tokens` new tokens each,
different prompts), first one after another on one engine, then all
submitted at once to the same engine; tokens/s counts generated tokens over
wall time, prompts included. `same` says whether every batched sequence gave
the text it gave alone. Models come from the cache (`complm pull` first).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

PROMPTS = ["Explain why the sky is blue.", "Describe how a bicycle works.", "Write about the history of tea.",
           "Explain how vaccines train the immune system."]


def chat(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--max-seqs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    opts = parser.parse_args()

    from complm_cli.experts.engine import Engine, Request
    from complm_cli.cache.catalog import catalog_for
    from complm_cli.cache.config import load_settings
    from complm_cli.cache.store import Store

    settings = load_settings()
    threads = opts.threads or settings.threads
    catalog, store = catalog_for(settings), Store(settings)
    print(f"complm batching bench: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"threads {threads}, gpu layers {opts.gpu_layers}, {opts.tokens} new tokens per sequence")
    header = f"{'model':22} {'seqs':>4} {'one by one tok/s':>16} {'together tok/s':>14} {'gain':>6} {'steps':>6} {'same':>5}"
    print(header)
    print("-" * len(header))
    for name in opts.models.split(","):
        expert = catalog.get(name)
        engine = Engine(store.require(expert), n_ctx=2048, slots=opts.max_seqs, threads=threads,
                        gpu_layers=opts.gpu_layers, name=name)
        try:
            def request(i: int) -> Request:
                return Request(engine.tokenize(chat(PROMPTS[i % len(PROMPTS)])), max_tokens=opts.tokens)

            "".join(engine.submit(request(0)))  # warm-up: first-use costs land nowhere
            for n in range(1, opts.max_seqs + 1):
                t = time.perf_counter()
                texts, tokens = [], 0
                for i in range(n):
                    seq = engine.submit(request(i))
                    texts.append("".join(seq))
                    tokens += seq.tokens
                serial = time.perf_counter() - t
                steps = engine.steps
                t = time.perf_counter()
                together = [engine.submit(request(i)) for i in range(n)]
                batched_texts = ["".join(s) for s in together]
                batched = time.perf_counter() - t
                batched_tokens = sum(s.tokens for s in together)
                one, many = tokens / serial, batched_tokens / batched
                print(f"{name:22} {n:>4} {one:>16.1f} {many:>14.1f} {many / one:>5.2f}x {engine.steps - steps:>6} "
                      f"{'yes' if batched_texts == texts else 'no':>5}", flush=True)
        finally:
            engine.close()


if __name__ == "__main__":
    main()
