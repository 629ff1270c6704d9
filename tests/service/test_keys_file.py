"""service.keys_file: the file format, and when the file is looked at (a fake clock; the files are real)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.keys_file import KeysFile, key_lines

ENTRY_A = "a:" + "a" * 64
ENTRY_B = "b:" + "b" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_key_lines_skip_blanks_and_comments_and_keep_line_numbers() -> None:
    text = f"# keys\r\n\r\n{ENTRY_A}  # team a\r\n   \n\t{ENTRY_B}\n#{ENTRY_A}"
    assert key_lines(text) == [
        ("M4V_API_KEYS_FILE line 3", ENTRY_A),
        ("M4V_API_KEYS_FILE line 5", ENTRY_B),
    ]


def test_read_tolerates_a_bom_and_replaces_undecodable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_bytes(b"\xef\xbb\xbf" + ENTRY_A.encode() + b"\n\xff\xfe:oops\n")
    entries = KeysFile(str(path), 1.0).read()
    assert entries[0] == ("M4V_API_KEYS_FILE line 1", ENTRY_A)
    assert entries[1][0] == "M4V_API_KEYS_FILE line 2" and "\ufffd" in entries[1][1]


def test_poll_looks_at_the_file_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(ENTRY_A + "\n")
    clock = Clock()
    keys = KeysFile(str(path), 5.0, clock=clock)
    assert keys.read() == [("M4V_API_KEYS_FILE line 1", ENTRY_A)]
    with path.open("a") as f:
        f.write(ENTRY_B + "\n")
    clock.now += 4.9
    assert keys.poll() is None  # changed, but not due: no stat
    clock.now += 0.2
    assert [entry for _, entry in keys.poll() or []] == [ENTRY_A, ENTRY_B]
    clock.now += 5.1
    assert keys.poll() is None  # due, unchanged


def test_poll_reports_a_vanished_file_once_and_its_return(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(ENTRY_A + "\n")
    clock = Clock()
    keys = KeysFile(str(path), 1.0, clock=clock)
    keys.read()
    path.unlink()
    clock.now += 1
    with pytest.raises(FileNotFoundError):
        keys.poll()
    clock.now += 1
    assert keys.poll() is None  # the same failure is not raised again
    tmp = tmp_path / "keys.tmp"
    tmp.write_text(ENTRY_B + "\n")
    os.replace(tmp, path)
    clock.now += 1
    assert keys.poll() == [("M4V_API_KEYS_FILE line 1", ENTRY_B)]


def test_a_rewrite_with_the_same_size_is_seen_by_its_new_mtime(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(ENTRY_A + "\n")
    clock = Clock()
    keys = KeysFile(str(path), 0.0, clock=clock)
    keys.read()
    path.write_text(ENTRY_A.replace("a:", "c:") + "\n")  # same size, same inode
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert keys.poll() == [("M4V_API_KEYS_FILE line 1", "c:" + "a" * 64)]
