"""Database URLs shared by the unit tests."""

UNREACHABLE_STORE_URL = "postgresql+psycopg2://nobody@127.0.0.1:1/none"  # nothing listens on port 1
# PostgreSQL tests use the `pg_url` fixture (tests/conftest.py): a database of their own, created and
# dropped per session, so a schema version of this branch never lands in the shared `test` database.
