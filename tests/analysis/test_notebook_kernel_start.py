"""A notebook whose kernel dies before its first reply is started once more; any other failure,
or a second such death, reaches the caller (urlkit.notebooks._execute_here)."""

import papermill
import pytest

from urlkit import notebooks

DIED = RuntimeError("Kernel died before replying to kernel_info")


def _papermill_that_fails(monkeypatch, failures):
    calls = []

    def execute_notebook(source, executed, **kwargs):
        calls.append(kwargs["kernel_name"])
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return calls


def test_a_kernel_that_died_at_start_up_is_started_again(monkeypatch, tmp_path, capsys):
    calls = _papermill_that_fails(monkeypatch, [DIED])
    notebooks._execute_here("weight_evolution", str(tmp_path / "out.ipynb"), {}, "python3", 60)
    assert calls == ["python3", "python3"]
    assert "starting a new kernel" in capsys.readouterr().err


def test_a_second_death_and_other_errors_are_raised(monkeypatch, tmp_path):
    calls = _papermill_that_fails(monkeypatch, [DIED] * notebooks.KERNEL_STARTS)
    with pytest.raises(RuntimeError, match="Kernel died"):
        notebooks._execute_here("weight_evolution", str(tmp_path / "out.ipynb"), {}, "python3", 60)
    assert len(calls) == notebooks.KERNEL_STARTS
    calls = _papermill_that_fails(monkeypatch, [RuntimeError("something else")])
    with pytest.raises(RuntimeError, match="something else"):
        notebooks._execute_here("weight_evolution", str(tmp_path / "out.ipynb"), {}, "python3", 60)
    assert len(calls) == 1
