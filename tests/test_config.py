"""hil.config's paths: what Windows takes as a path is taken there, and what it refuses is refused at its line."""

import sys

import pytest

from hil.config import YamlDocument
from hil.errors import ConfigError


def test_a_windows_long_path_of_the_extended_prefix_is_taken_and_its_names_still_checked(monkeypatch) -> None:
    """\\\\?\\C:\\... is how Windows opens a path past 260 characters where long paths are not enabled: it was
    refused as holding a name '?' that Windows takes no such file or folder name, with the advice to rename it."""
    from hil.protocol import OutputConfig

    long = "\\\\?\\D:\\" + "\\".join(["x" * 99] * 3)
    with monkeypatch.context() as windows:  # as Windows names itself, for these checks alone
        windows.setattr(sys, "platform", "win32")
        taken = [YamlDocument.parse(f"root: '{path}'", "p.yaml").validate(OutputConfig).root
                 for path in (long, "\\\\.\\D:\\runs")]
        with pytest.raises(ConfigError, match=r"^p\.yaml:1: root: the name 'a\?b' in it holds '\?': Windows takes no "):
            YamlDocument.parse("root: '\\\\?\\D:\\runs\\a?b'", "p.yaml").validate(OutputConfig)
    assert taken == [long, "\\\\.\\D:\\runs"]


def test_a_path_in_the_home_of_a_user_the_system_does_not_know_is_refused_at_its_line() -> None:
    """pathlib raised "Could not determine home directory" where the run used it; the check passed it, read as the
    folder ``./~nosuchuser``."""
    from hil.protocol import OutputConfig

    with pytest.raises(ConfigError, match=r"^p\.yaml:1: root: ~hil-no-such-user stands for the home folder of the user "
                                          r"hil-no-such-user, whom this system does not know; give a path without ~"):
        YamlDocument.parse("root: ~hil-no-such-user/runs", "p.yaml").validate(OutputConfig)
