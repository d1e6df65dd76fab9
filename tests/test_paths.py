from lmshrink.paths import free_path


def test_free_path_never_returns_an_existing_file(tmp_path):
    first = free_path(tmp_path, "config", ".yaml", tag="test")
    assert first.name == "config.yaml"
    first.write_text("x")
    second = free_path(tmp_path, "config", ".yaml", tag="test")
    assert second.name == "config.test-1.yaml"
    second.write_text("y")
    assert free_path(tmp_path, "config", ".yaml", tag="test").name == "config.test-2.yaml"
    (tmp_path / "r.json").write_text("{}")
    assert free_path(tmp_path, "r", ".json").name == "r-1.json"
    assert first.read_text() == "x"
