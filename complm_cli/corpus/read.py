"""Files to passages: .txt and .md split on paragraph boundaries, .jsonl one record a line.

A passage is a few hundred tokens at most (MAX_WORDS words, about what the
embedder reads whole), so that a retrieved passage is about one thing and a
reader's prompt stays short. Each passage keeps where it came from: its file
and line range, or its JSONL record's id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from complm_cli.errors import DatasetError, UsageError

MAX_WORDS = 180  # MiniLM reads 256 word pieces; 180 words stay within them
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
SUFFIXES = (*TEXT_SUFFIXES, ".jsonl")


@dataclass(frozen=True)
class Passage:
    text: str
    title: str
    start_line: int
    end_line: int
    record_id: str = ""  # a JSONL record's id


@dataclass
class SourceFile:
    path: Path  # absolute, resolved
    size: int
    mtime_ns: int


@dataclass
class Found:
    """What a walk over the given paths found: the files to read and what it skipped, by reason."""

    files: list[SourceFile] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def find_files(paths: list[Path]) -> Found:
    """Every file to index under `paths`: a named file as it is; a folder's .txt, .md and .jsonl files,
    recursively, leaving out hidden files and folders."""
    found = Found()
    seen: set[Path] = set()
    for given in paths:
        path = Path(os.path.expanduser(str(given)))
        if not path.exists():
            raise UsageError(f"{given} does not exist; name files or folders to add.")
        path = path.resolve()
        if path.is_file():
            _take(path, found, seen)
            continue
        if not path.is_dir():
            raise UsageError(f"{given} is neither a file nor a folder.")
        for root, dirs, files in os.walk(path, onerror=_walk_error):
            hidden = [d for d in dirs if d.startswith(".")]
            for _ in hidden:
                found.skip("hidden")
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    found.skip("hidden")
                elif not name.lower().endswith(SUFFIXES):
                    found.skip("other type")
                else:
                    _take(Path(root) / name, found, seen)
    return found


def _walk_error(exc: OSError) -> None:
    raise DatasetError(f"The folder {exc.filename} cannot be read ({exc.strerror}).")


def _take(path: Path, found: Found, seen: set[Path]) -> None:
    if path in seen:
        return
    seen.add(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise DatasetError(f"The file {path} cannot be read ({exc.strerror}).") from None
    if not stat.S_ISREG(st.st_mode):  # a pipe or a device would block the read, or never end
        found.skip("not a regular file")
        return
    found.files.append(SourceFile(path, st.st_size, st.st_mtime_ns))


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"The file {path} cannot be read ({exc.strerror}).") from None


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode(data: bytes) -> str | None:
    """The text of a file, or None for a binary one (a NUL byte, or bytes that are not UTF-8)."""
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def passages(path: Path, text: str) -> Iterator[Passage]:
    if path.suffix.lower() == ".jsonl":
        yield from _jsonl(path, text)
    else:
        yield from _text(text, path.stem, markdown=path.suffix.lower() in (".md", ".markdown"))


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")


def _text(text: str, default_title: str, markdown: bool) -> Iterator[Passage]:
    """Paragraphs (blank-line separated), merged up to MAX_WORDS; a markdown heading starts a new passage
    and titles those under it."""
    title = default_title
    chunk: list[str] = []
    start = end = 0
    words = 0

    def flush() -> Iterator[Passage]:
        if chunk:
            yield from _bounded(" ".join(chunk), title, start, end)

    for first, last, para in _paragraphs(text):
        heading = _HEADING.match(para.splitlines()[0]) if markdown else None
        if heading:
            yield from flush()
            chunk, words = [], 0
            title = heading.group(1)
            para = "\n".join(para.splitlines()[1:]).strip()
            if not para:
                continue
        n = len(para.split())
        if chunk and words + n > MAX_WORDS:
            yield from flush()
            chunk, words = [], 0
        if not chunk:
            start = first
        chunk.append(para)
        words += n
        end = last
    yield from flush()


def _paragraphs(text: str) -> Iterator[tuple[int, int, str]]:
    """(first line, last line, text) of each paragraph; lines count from 1."""
    lines: list[str] = []
    first = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if not lines:
                first = number
            lines.append(line.strip())
        elif lines:
            yield first, number - 1, "\n".join(lines)
            lines = []
    if lines:
        yield first, first + len(lines) - 1, "\n".join(lines)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _bounded(text: str, title: str, start: int, end: int, record_id: str = "") -> Iterator[Passage]:
    """One passage, or several of at most MAX_WORDS words cut between sentences (between words, for a
    sentence longer than that)."""
    text = " ".join(text.split())
    if len(text.split()) <= MAX_WORDS:
        yield Passage(text, title, start, end, record_id)
        return
    piece: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        words = sentence.split()
        while len(words) > MAX_WORDS:
            if piece:
                yield Passage(" ".join(piece), title, start, end, record_id)
                piece = []
            yield Passage(" ".join(words[:MAX_WORDS]), title, start, end, record_id)
            words = words[MAX_WORDS:]
        if piece and len(piece) + len(words) > MAX_WORDS:
            yield Passage(" ".join(piece), title, start, end, record_id)
            piece = []
        piece.extend(words)
    if piece:
        yield Passage(" ".join(piece), title, start, end, record_id)


def _jsonl(path: Path, text: str) -> Iterator[Passage]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise DatasetError(f"{path}, line {number}: not a JSON object.") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{path}, line {number}: not a JSON object.")
        body = record.get("text")
        if not isinstance(body, str) or not body.strip():
            raise DatasetError(f"{path}, line {number}: no \"text\" (each line needs a text; title and id are optional).")
        title = record.get("title")
        rid = record.get("id")
        yield from _bounded(body, title if isinstance(title, str) else "", number, number,
                            "" if rid is None else str(rid))
