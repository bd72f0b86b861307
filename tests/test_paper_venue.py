def test_import() -> None:
    import app.engine.paper  # noqa: F401
