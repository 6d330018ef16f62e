"""A stand-in for `python -m pip`, for tests of the PyPI mirror (COMPLM_PIP runs it).

Understands only `download ... -d DIR [--] NAME==VERSION`. What it does is
chosen by FAKEPIP_MODE:

- ok (default): copy NAME's wheel from FAKEPIP_WHEELS into DIR;
- nospace: fail the way pip does on a full disk;
- hang: write its pid to FAKEPIP_PID, then keep writing into TMPDIR (where
  pip streams a download) until it is killed.

Every call appends its arguments, as one JSON line, to FAKEPIP_LOG.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if os.environ.get("FAKEPIP_LOG"):
        with open(os.environ["FAKEPIP_LOG"], "a") as log:
            log.write(json.dumps(argv) + "\n")
    if not argv or argv[0] != "download" or "-d" not in argv:
        print(f"fakepip: unexpected arguments {argv}", file=sys.stderr)
        return 2
    folder = Path(argv[argv.index("-d") + 1])
    requirement = argv[-1]
    mode = os.environ.get("FAKEPIP_MODE", "ok")
    if mode == "nospace":
        print("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device", file=sys.stderr)
        return 1
    if mode == "hang":
        Path(os.environ["FAKEPIP_PID"]).write_text(str(os.getpid()))
        with open(Path(os.environ["TMPDIR"]) / "download.tmp", "ab") as out:
            while True:
                out.write(b"x" * 4096)
                out.flush()
                time.sleep(0.01)
    name, version = requirement.split("==")
    dist = name.replace("-", "_")
    wheel = Path(os.environ["FAKEPIP_WHEELS"]) / f"{dist}-{version}-py3-none-any.whl"
    if not wheel.is_file():
        print(f"ERROR: No matching distribution found for {requirement}", file=sys.stderr)
        return 1
    shutil.copy(wheel, folder / wheel.name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
