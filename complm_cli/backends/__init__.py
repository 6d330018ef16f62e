"""Where text is generated. The scheduler only knows the Worker interface."""
