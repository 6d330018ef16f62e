"""What checking a draft of k tokens costs against decoding one token, on one sequence.

    python bench/draft_cost.py [--model qwen2.5-coder-1.5b] [--threads T] [--gpu-layers N] [--plain]

Prompt-lookup (and any speculative) decoding pays only where evaluating k
tokens in one step costs much less than k single steps. Prints, for k = 1
to 32, the median milliseconds of one llama_decode of k tokens after a
short prompt, and that cost in single steps: a draft of k tokens pays only
when more tokens than that are accepted on average. The same table is the
price of batching: n sequences decoding together put n tokens in a step.

On CPUs that have them, llama.cpp repacks weights at load into a layout for
its own matrix kernels (the default, and complm's); `--plain` loads the
model without that (`use_extra_bufts = false`), for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--plain", action="store_true", help="no weight repacking (llama.cpp's use_extra_bufts off)")
    opts = parser.parse_args()
    if opts.plain:
        import llama_cpp

        defaults = llama_cpp.llama_model_default_params

        def plain():
            params = defaults()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_model_default_params = plain  # what Engine asks for when it loads the model

    from complm_cli.experts.engine import Engine
    from complm_cli.cache.catalog import catalog_for
    from complm_cli.cache.config import load_settings
    from complm_cli.cache.store import Store

    settings = load_settings()
    expert = catalog_for(settings).get(opts.model)
    engine = Engine(Store(settings).require(expert), n_ctx=2048, slots=1, threads=opts.threads or settings.threads,
                    gpu_layers=opts.gpu_layers, name=expert.name)
    prompt = engine.tokenize("<|im_start|>user\nWho painted the Mona Lisa, and what is the chemical symbol for gold? "
                             "Tell me the whole story, with every detail you know.<|im_end|>\n<|im_start|>assistant\n")

    def decode(tokens: list[int], start: int) -> None:
        batch = engine.llama.batch
        batch.clear()
        for i, token in enumerate(tokens):
            batch.add(token, start + i, 0, True)  # a draft needs every position's logits
        assert engine.llama.decode(batch) == 0

    def run() -> None:
        decode(prompt, 0)
        print(f"{expert.name}, threads {engine.threads}, gpu layers {opts.gpu_layers}{', plain (no repacking)' if opts.plain else ''}")
        one = None
        for k in (1, 2, 3, 4, 6, 8, 10, 12, 14, 15, 16, 17, 20, 24, 32, 64):
            times = []
            for _ in range(7):
                engine.llama.seq_remove(0, len(prompt))
                t = time.perf_counter()
                decode((prompt * 2)[:k], len(prompt))
                times.append(time.perf_counter() - t)
            ms = statistics.median(times) * 1000
            one = one or ms
            print(f"k={k:>2}: {ms:6.1f} ms = {ms / one:4.1f} single steps")

    engine._call(run)  # on the engine's own thread, the only one that touches its context
    engine.close()


if __name__ == "__main__":
    main()
