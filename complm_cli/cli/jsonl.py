"""`--jsonl`: a run as JSON lines on stdout, as it happens, for scripts.

Each line is one object: `{"event": KIND, ...}` for each event the live view
draws (stage, step_planned, plan_ready, node_started, node_sources,
node_token, node_done, node_failed, answer_token, answer_done), then
`{"result": RECORD}` (the `--json` record), or `{"error": {"message",
"exit_code"}}` when the run fails before it has one. These are the lines
`complm serve` streams from /api/ask (serve/wire.py), so a script reads a
run in the process and one on a server alike.
"""

from __future__ import annotations

import json
from typing import IO


class JsonLines:
    """A listener that writes each event as a line, flushed, so a reader sees it at once."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def __call__(self, event) -> None:
        from complm_cli.serve.wire import event_record

        record = event_record(event)
        if record is not None:
            self.write(record)

    def write(self, obj: dict) -> None:
        print(json.dumps(obj, ensure_ascii=False), file=self.stream, flush=True)
