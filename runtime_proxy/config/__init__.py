"""The native config: the versioned contract (model.py), loading and validation, the loader child."""
