"""Local fakes of the platforms redesk talks to, for tests that drive the real client libraries."""
