import json
from pathlib import Path

import pytest

from countdown_env.files import append_jsonl, cut_torn_tail, iter_jsonl, read_jsonl, save_png_atomic, write_jsonl_atomic, write_text_atomic

ROWS = [{"step": 1, "text": "a"}, {"step": 2, "text": "b"}, {"step": 3, "text": "c"}]


def lines(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def test_read_jsonl_reads_every_row_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(lines(ROWS[:2]) + "\n  \n" + lines(ROWS[2:]))
    assert read_jsonl(path) == ROWS
    assert [n for n, _ in iter_jsonl(path)] == [1, 2, 5]  # line numbers count the blank lines


def test_read_jsonl_skips_a_torn_last_line_only(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    torn = json.dumps(ROWS[2])[:10]  # a writer killed (or still) mid-row: no newline yet
    path.write_text(lines(ROWS[:2]) + torn)
    assert read_jsonl(path) == ROWS[:2]
    # The same bad text with its newline is not a row being written: it is an error.
    path.write_text(lines(ROWS[:2]) + torn + "\n")
    with pytest.raises(ValueError, match=r"live\.jsonl:3"):
        read_jsonl(path)


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", "7"])
def test_read_jsonl_names_file_and_line_of_a_bad_middle_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(lines(ROWS[:1]) + bad + "\n" + lines(ROWS[1:]))
    with pytest.raises(ValueError, match=rf"{path}:2: "):
        read_jsonl(path)


def test_read_jsonl_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "missing.jsonl")


def test_append_jsonl_appends_and_cuts_a_torn_tail_first(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    append_jsonl(path, ROWS[:1])
    append_jsonl(path, [])
    with path.open("a") as f:
        f.write(json.dumps(ROWS[1])[:7])  # a crash mid-write
    append_jsonl(path, ROWS[2:])
    assert path.read_text() == lines([ROWS[0], ROWS[2]])  # the torn row is gone, not glued to the next


def test_cut_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    assert not cut_torn_tail(path)  # missing
    path.write_text("")
    assert not cut_torn_tail(path)
    path.write_text(lines(ROWS))
    assert not cut_torn_tail(path) and read_jsonl(path) == ROWS
    path.write_text('{"only": "torn')
    assert cut_torn_tail(path) and path.read_text() == ""
    long = lines(ROWS) + json.dumps({"text": "x" * 200_000})[:150_000]  # a torn row longer than one read chunk
    path.write_text(long)
    assert cut_torn_tail(path) and path.read_text() == lines(ROWS)


def test_write_jsonl_atomic_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, ROWS)
    write_jsonl_atomic(path, (row for row in ROWS[:1]))  # a generator is streamed
    assert read_jsonl(path) == ROWS[:1]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left


def test_atomic_writers_leave_the_old_file_intact_if_writing_raises(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, ROWS)
    before = path.read_text()

    def rows_then_crash():
        yield ROWS[0]
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(path, rows_then_crash())
    with pytest.raises(TypeError):
        write_jsonl_atomic(path, [{"not serialisable": object()}])
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_write_text_atomic(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_text_atomic(path, "{}\n")
    write_text_atomic(path, '{"a": 1}\n')
    assert path.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_save_png_atomic_writes_a_png_and_a_failed_save_leaves_the_old_plot(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = tmp_path / "plot.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_png_atomic(fig, path)
    plt.close(fig)
    old = path.read_bytes()
    assert old.startswith(b"\x89PNG")

    class Killed:  # a save killed halfway: some bytes written, then an error
        def savefig(self, f, **_: object) -> None:
            f.write(b"\x89PNG half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_png_atomic(Killed(), path)
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["plot.png"]
