"""A sequence's text as its tokens come: shown at once, except what may be the start of a stop string."""

from __future__ import annotations

import codecs


def hold_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters could be the start of a stop string (not shown yet)."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


class StopFilter:
    """Token bytes in, text out; a stop string ends the text and is never shown."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        # A token may hold part of a character: the decoder keeps it until the rest comes.
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.text = ""  # all of it so far, what is held back included (a drafter guesses what follows it)
        self.emitted = 0  # characters shown

    def feed(self, data: bytes) -> tuple[str, bool]:
        """Add a token's bytes. Returns the text that may be shown now, and whether a stop string ended
        the text (then what is before it and not shown yet is `rest()`)."""
        self.text += self._decoder.decode(data)
        # A stop may begin in text held back earlier, never further back than its own length.
        found = (self.text.find(s, max(0, self.emitted - len(s))) for s in self.stops)
        cut = min((i for i in found if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            return "", True
        show = len(self.text) - hold_back(self.text, self.stops)
        if show <= self.emitted:
            return "", False
        piece, self.emitted = self.text[self.emitted : show], show
        return piece, False

    def rest(self) -> str:
        """What has not been shown (the sequence ended: nothing more is held back)."""
        return self.text[self.emitted :]
