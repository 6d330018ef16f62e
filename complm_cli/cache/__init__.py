"""The catalog, the user's settings, and the model store with its sources."""
