"""complm over HTTP: the OpenAI-compatible server, the --server client, and the records on the wire."""
