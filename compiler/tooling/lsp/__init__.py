"""`meshc lsp`: the protocol shell (server.py) over the analysis of a document (analysis.py)."""
