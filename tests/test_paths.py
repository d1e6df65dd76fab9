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


def test_write_new_json_creates_the_directory_and_never_overwrites(tmp_path):
    from lmshrink.paths import write_new_json

    first = write_new_json(tmp_path / "new", "record", {"a": 1})
    second = write_new_json(tmp_path / "new", "record", {"a": object()}, default=lambda value: "object")
    assert (first.name, second.name) == ("record.json", "record-1.json")
    assert first.read_text() == '{\n  "a": 1\n}' and '"object"' in second.read_text()
