"""The auth core: tokens, SQLite store, Redis blacklist and the auth flow. Never imports Textual."""
