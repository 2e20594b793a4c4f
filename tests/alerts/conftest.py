from tests.ingest.conftest import registry  # noqa: F401 - shared fixture
