"""One helper turns every library's error into the one line a vqbench message quotes."""

from benchmark.error_text import first_line


def test_first_line_is_the_first_non_blank_line_cut_to_its_limit():
    assert first_line(RuntimeError("\n  boom: no such table\nTraceback ...\n")) == "boom: no such table"
    assert first_line(ValueError("x" * 500)) == "x" * 200
    assert first_line("y" * 500, 300) == "y" * 300


def test_an_empty_error_gives_an_empty_line_not_an_index_error():
    assert first_line(ConnectionError()) == ""
    assert first_line("  \n ") == ""
