"""``python -m benchmarks``: where runs are written, what may replace the committed results,
and the load averages every table states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import benchmarks.__main__ as cli

TINY_ARGS = ["--window", "0.05", "--warmup", "0.02", "--reps", "1", "--timeout", "50"]


def test_quick_runs_never_replace_the_committed_results(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--quick", "--update-results"])
    assert "--update-results cannot be used with --quick" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_args(["--no-write", "--update-results"])


def test_runs_go_to_a_folder_of_their_own_by_default() -> None:
    args = cli.parse_args([])
    assert args.out == cli.RUNS == cli.RESULTS / "runs"
    assert not args.update_results


def test_ignored_folders() -> None:
    ignored = (Path(cli.RESULTS).parent.parent / ".gitignore").read_text().splitlines()
    assert "benchmarks/results/runs/" in ignored
    assert "benchmarks/results/profiles/" in ignored


def run(tmp_path: Path, *extra: str) -> Path:
    assert (
        cli.main(["overhead", "--only", "classic", "--out", str(tmp_path), *TINY_ARGS, *extra]) == 0
    )
    (folder,) = tmp_path.iterdir()
    return folder


@pytest.mark.slow
def test_a_run_writes_its_folder_and_states_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = tmp_path / "committed"
    committed.mkdir()
    monkeypatch.setattr(cli, "RESULTS", committed)
    runs = tmp_path / "runs"
    folder = run(runs)
    assert sorted(p.name for p in folder.iterdir()) == ["results.json", "results.md"]
    text = (folder / "results.md").read_text()
    assert text.count("Load average (1, 5, 15 min) before: ") == 1
    data = json.loads((folder / "results.json").read_text())
    loads = data["load_average"]["overhead"]
    assert len(loads["before"]) == 3 and len(loads["after"]) == 3
    assert list(committed.iterdir()) == []  # nothing replaced without --update-results

    folder = run(tmp_path / "again", "--update-results")
    assert sorted(p.name for p in committed.iterdir()) == ["latest.json", "latest.md"]
    assert (committed / "latest.md").read_text() == (folder / "results.md").read_text()


def test_quick_run_folders_are_marked(tmp_path: Path) -> None:
    folder = run(tmp_path, "--quick")
    assert folder.name.endswith("-quick")
