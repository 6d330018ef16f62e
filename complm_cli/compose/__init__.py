"""The four stages of a run (plan, route, execute, aggregate) and the Session that wires them."""
