"""Facts of the language that every stage reads: defaults, settings blocks, retry conditions, identities."""
