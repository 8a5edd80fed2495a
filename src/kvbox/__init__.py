"""kvbox: a self-hosted key-value store speaking the Apify API v2 key-value-store protocol."""

__version__ = "0.1.0"
