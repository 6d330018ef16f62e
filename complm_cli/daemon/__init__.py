"""The background server: `complm ask` and `graph` answer through a local server that keeps the models loaded.

A new `complm` process spends 7 to 10 s importing torch and loading models
before it can plan (bench/oneshot.py); a server that stays does that once, as
Ollama's does. The first `ask` starts one (connect.py) and later ones use it;
it unloads a model that no run has used for `keep_alive` and exits after
`idle_exit` without a request (keeper.py). It listens on a Unix socket in a
folder only its user can open (place.py), one server per user and cache, and
describes itself (identity.py) so that a client whose settings or complm
differ replaces it. The in-process path stays: `--no-daemon`,
`COMPLM_DAEMON=0` or `daemon = false`, and whenever the server cannot be had.
"""
