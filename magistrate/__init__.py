"""magistrate: distributed pairwise LLM judging on Ray."""

__version__ = "0.1.0"
