"""llmmon's desktop entries, checked by ``desktop-file-validate`` (desktop-file-utils), the
reference validator of the freedesktop.org Desktop Entry Specification."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from app.desktop_entry import desktop_entry, entry_path, exec_arg, icon_path, launcher_command, write_entry


def validate(text: str, tmp: Path) -> str:
    """desktop-file-validate's complaints about ``text`` (empty when it is valid)."""
    path = write_entry(tmp / "llmmon.desktop", text)
    done = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True, timeout=30)
    return (done.stdout + done.stderr).strip() if done.returncode or done.stdout else ""


def test_entries_go_to_the_users_xdg_folders(tmp_path: Path) -> None:
    data = Path(os.environ["XDG_DATA_HOME"])
    assert entry_path() == data / "applications" / "llmmon.desktop"
    assert icon_path(48) == data / "icons" / "hicolor" / "48x48" / "apps" / "llmmon.png"
    assert icon_path(None) == data / "icons" / "hicolor" / "scalable" / "apps" / "llmmon.svg"


def test_the_launcher_and_the_autostart_entry_are_valid(tmp_path: Path) -> None:
    assert validate(desktop_entry(launcher_command()), tmp_path) == ""
    assert validate(desktop_entry(launcher_command(), autostart=True), tmp_path) == ""


def test_arguments_with_spaces_and_special_characters_are_quoted_as_the_spec_says(tmp_path: Path) -> None:
    assert exec_arg("/usr/bin/python3") == "/usr/bin/python3"
    assert exec_arg("/home/ana/my apps/python") == '"/home/ana/my apps/python"'
    # Inside quotes $ is escaped with a backslash, which the file format escapes once more.
    assert exec_arg("/home/ana/llm$mon/main.py") == '"/home/ana/llm\\\\$mon/main.py"'
    assert exec_arg("/opt/100%/main.py") == "/opt/100%%/main.py"
    assert validate(desktop_entry(["/home/ana/my apps/python", "/home/ana/llm$mon/main.py"]), tmp_path) == ""


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\n\t\"\\$`%"),
                        min_size=1), min_size=1, max_size=3))
def test_any_command_makes_a_valid_entry(tmp_path_factory, argv: list[str]) -> None:
    assert validate(desktop_entry(argv), tmp_path_factory.mktemp("entry")) == ""
