"""`complm serve`: complm as an OpenAI-compatible model over HTTP."""

from __future__ import annotations

from pathlib import Path

import typer

from complm_cli.cli.common import CatalogOpt, GpuLayersOpt, OfflineOpt, ThreadsOpt, TimeoutOpt, env, handles_errors


@handles_errors
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 0.0.0.0 opens it to the network."),
    port: int = typer.Option(8000, "--port", "-p", min=0, max=65535, help="Port to listen on (0: any free port)."),
    api_key: str = typer.Option(None, "--api-key", envvar="COMPLM_SERVE_API_KEY", show_envvar=True,
                                help="Require 'Authorization: Bearer KEY' (the environment variable keeps it out of `ps`)."),
    workers: int = typer.Option(None, "--workers", "-w", min=1, help="Nodes that may run at once in one request."),
    threads: int = ThreadsOpt,
    gpu_layers: int = GpuLayersOpt,
    max_memory: str = typer.Option(None, "--max-memory", help="Memory for resident models, shared by all requests, e.g. 8GB."),
    timeout: float = TimeoutOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each request on stderr."),
    offline: bool = OfflineOpt,
    catalog: Path = CatalogOpt,
) -> None:
    """Serve the pipeline as an OpenAI-compatible API: models complm, complm-sequential, complm-monolithic."""
    from complm_cli.serve import server
    from complm_cli.cli.common import load
    from complm_cli.cli.pull_progress import RichPullReporter
    from complm_cli.cache.config import parse_size

    server.require_extra()
    e = env()
    settings, cat = load(catalog, offline, workers=workers, threads=threads, gpu_layers=gpu_layers,
                         node_timeout=timeout, max_memory=parse_size(max_memory) if max_memory else None)
    sock = server.bind(host, port)  # before the models: a taken port should fail at once
    console = e.err_console()
    try:
        session = server.make_session(settings, cat, RichPullReporter(console, e.stderr_isatty))
    except BaseException:
        sock.close()
        raise
    session.warm_up()
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    # Bound to every address, it is asked at this machine's own one.
    local = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(bound_host, shown)
    print(f"complm serve: listening on http://{shown}:{bound_port}/v1 (models: {', '.join(server.MODELS)}); "
          f"`complm ask --server http://{local}:{bound_port}` asks it; Ctrl-C stops it", file=e.stderr, flush=True)
    if not api_key and not server.is_loopback(host):
        print(f"complm serve: warning: {host} is reachable from other machines and no --api-key is set.", file=e.stderr)
    try:
        server.serve(session, sock, api_key=api_key or None, verbose=verbose)
    finally:
        session.close(wait=False)  # a Ctrl-C soon after the start need not wait for the embedder to load
