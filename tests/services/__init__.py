"""Real backing services (PostgreSQL, S3, clamd) started for tests."""
