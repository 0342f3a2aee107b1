"""Ray actors of the runtime, each a thin shell over a plain class that holds the logic."""
