import io

from kgseqgraph.training import TrainConfig
from kgseqgraph.utils.progress import in_ci, progress_enabled


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_one_rule_terminal_and_not_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("sys.stderr", _Terminal())
    assert progress_enabled(None) and progress_enabled(True) and not progress_enabled(False)
    assert TrainConfig(progress=None).progress_enabled and not TrainConfig(progress=False)\
        .progress_enabled
    for value in ("true", "1", "yes", "github"):
        monkeypatch.setenv("CI", value)
        assert in_ci() and not progress_enabled(True) and not progress_enabled(None)
    for value in ("", "0", "false", "no"):
        monkeypatch.setenv("CI", value)
        assert not in_ci() and progress_enabled(None)


def test_no_bar_without_a_terminal(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a log file: no isatty
    assert not progress_enabled(True) and not progress_enabled(None)
    assert not TrainConfig(progress=True).progress_enabled
