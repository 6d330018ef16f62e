"""How `complm serve` stops on Ctrl-C: idle at several moments after its start, and with a request in flight.

    python bench/serve_stop.py [--catalog FILE] [--after 0.5,3,8]

Starts `complm serve --port 0` in a process of its own, waits the given
seconds after it says where it listens (the embedder may still be loading
then), sends SIGINT and measures until the process has exited. Then twice
more with a request in flight (one non-streamed, one streamed chat
completion of the monolithic model, asked for a long story), and prints
what each client got back. Nothing here is in the test suite: the tests
check the behaviour (exit 130, no traceback, a JSON error for each client),
this prints the seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time

STORY = "Write a very long story about a dragon, with many chapters."


def start(catalog: str | None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, **({"COMPLM_CATALOG": catalog} if catalog else {})}
    proc = subprocess.Popen([sys.executable, "-m", "complm_cli", "serve", "--port", "0"], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    line = proc.stderr.readline()
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+)/v1", line)
    if not match:
        proc.kill()
        raise SystemExit(f"complm serve did not start: {line}{proc.stderr.read()}")
    return proc, match.group(1)


def stop(proc: subprocess.Popen) -> tuple[float, int, str]:
    t = time.monotonic()
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    return time.monotonic() - t, proc.returncode, err


def main() -> None:
    import httpx2

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", default=None)
    ap.add_argument("--after", default="0.5,3,8", help="seconds after the start at which an idle server is stopped")
    args = ap.parse_args()
    for after in [float(a) for a in args.after.split(",")]:
        proc, _ = start(args.catalog)
        time.sleep(after)
        seconds, code, err = stop(proc)
        print(f"idle, stopped {after:g} s after its start: exit {code} in {seconds:.2f} s; stderr {err.strip()!r}")
    for stream in (False, True):
        proc, url = start(args.catalog)
        got: dict = {}

        def ask() -> None:
            body = {"model": "complm-monolithic", "stream": stream, "messages": [{"role": "user", "content": STORY}]}
            response = httpx2.post(url + "/v1/chat/completions", json=body, timeout=300)
            got.update(status=response.status_code, end=response.text.strip().splitlines()[-2:])

        client = threading.Thread(target=ask)
        client.start()
        time.sleep(4)  # the model is writing by now
        seconds, code, err = stop(proc)
        client.join(60)
        lines = len(err.strip().splitlines())
        print(f"busy ({'streamed' if stream else 'not streamed'}): exit {code} in {seconds:.2f} s, {lines} line(s) on "
              f"stderr; the client got {got}")


if __name__ == "__main__":
    main()
