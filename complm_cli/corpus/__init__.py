"""Knowledge corpora: the user's documents, indexed so plan steps can look facts up in them.

`complm corpus add NAME PATH...` reads files into passages (read.py), embeds
them with the router's embedder and writes them to a SQLite database with an
FTS5 table for BM25 and a faiss file for dense vectors (index.py). A step
routed to the corpus retrieves passages by both, fused (search.py), and a
reader model answers from them only (compose/knowledge.py).
"""
