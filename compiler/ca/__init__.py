"""`meshc ca`: a development CA for the sidecars' SPIFFE certificates (certs.py builds, files.py stores)."""
