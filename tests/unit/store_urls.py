"""Database URLs shared by the unit tests."""

UNREACHABLE_STORE_URL = "postgresql+psycopg2://nobody@127.0.0.1:1/none"  # nothing listens on port 1
POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"  # always up here and in CI (trust auth)
