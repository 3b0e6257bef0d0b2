"""recipe: turn a creator's videos into a local model that answers in their voice."""

__version__ = "0.1.0"
