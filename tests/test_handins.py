"""Hand-ins: which entries of a path are graded, and reading their notebooks without trusting them."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import nbformat
import pytest
from conftest import write_notebook

from autograder.grading import handins, isolation
from autograder.grading.handins import (
    SubmissionFormatError, discover, find_notebook, read_notebook, submission_digest, submission_hash,
)

NOT_FOLLOWED = "which the grader does not follow: hand in the notebook file itself"


def notebook(path: Path, source: str = "x = 1") -> Path:
    return write_notebook(path, [nbformat.v4.new_code_cell(source)])


def format_error(call, *args) -> str:
    with pytest.raises(SubmissionFormatError) as info:
        call(*args)
    return str(info.value)


def finishes(call, *args, timeout: float = 10.0):
    """Run `call` in a thread: a FIFO opened for reading would block the test forever otherwise."""
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_outcome(call, *args)), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{call.__name__} blocked"
    return outcome[0]


def _outcome(call, *args):
    try:
        return call(*args)
    except SubmissionFormatError as exc:
        return exc


# --- finding the notebook of a hand-in ----------------------------------------------------------


def test_a_notebook_file_is_used_as_is(tmp_path):
    path = notebook(tmp_path / "team.ipynb")
    assert find_notebook(path) == path


@pytest.mark.parametrize(
    "files, message",
    [
        ([], "expected exactly one notebook in team/, found none; hand in the .ipynb file you worked in"),
        (["a.ipynb", "sub/b.ipynb"], "expected exactly one notebook in team/, found 2: a.ipynb, sub/b.ipynb; hand in "
                                     "only the notebook you worked in"),
        ([".ipynb_checkpoints/a-checkpoint.ipynb", "notes.txt"], "expected exactly one notebook in team/, found none"),
    ],
    ids=["none", "two", "only-checkpoints"],
)
def test_folder_without_exactly_one_notebook(tmp_path, files, message):
    (tmp_path / "team").mkdir()
    for rel in files:
        notebook(tmp_path / "team" / rel)
    assert format_error(find_notebook, tmp_path / "team").startswith(message)


@pytest.mark.parametrize(
    "files, preferred, found",
    [
        (["sub/hw.ipynb", ".ipynb_checkpoints/hw-checkpoint.ipynb"], None, "sub/hw.ipynb"),
        (["01_demo.ipynb", "scratch.ipynb", "old/copy.ipynb"], "01_demo.ipynb", "01_demo.ipynb"),
        (["mine.ipynb"], "01_demo.ipynb", "mine.ipynb"),
        (["mine.ipynb", "__MACOSX/._mine.ipynb", ".hidden/other.ipynb"], None, "mine.ipynb"),
    ],
    ids=["one-plus-checkpoint", "preferred-among-several", "preferred-absent", "macos-archive-metadata"],
)
def test_folder_with_one_or_the_preferred_notebook(tmp_path, files, preferred, found):
    for rel in files:
        notebook(tmp_path / "team" / rel)
    assert find_notebook(tmp_path / "team", preferred_name=preferred) == tmp_path / "team" / found


def test_several_notebooks_name_the_one_to_grade(tmp_path):
    notebook(tmp_path / "team" / "a.ipynb")
    notebook(tmp_path / "team" / "b.ipynb")
    assert format_error(find_notebook, tmp_path / "team", "01_demo.ipynb").endswith(
        "hand in only the notebook you worked in, or name the one to grade 01_demo.ipynb")


@pytest.mark.parametrize("target", ["solution", "sample", "other_team", "dev_zero"])
def test_a_linked_notebook_is_never_graded(tmp_path, target):
    """LMS archives keep links: one to the instructor's solution, a sample, another team's notebook or
    /dev/zero must not score, nor be read."""
    targets = {"solution": notebook(tmp_path / "source" / "01_demo.ipynb", "def top_k(): pass"),
               "sample": notebook(tmp_path / "samples" / "correct.ipynb", "def top_k(): pass"),
               "other_team": notebook(tmp_path / "lms" / "team02" / "01_demo.ipynb"), "dev_zero": Path("/dev/zero")}
    (tmp_path / "lms" / "team01").mkdir(parents=True)
    (tmp_path / "lms" / "team01" / "01_demo.ipynb").symlink_to(targets[target])
    assert format_error(find_notebook, tmp_path / "lms" / "team01", "01_demo.ipynb") == (
        f"expected exactly one notebook in team01/, found none; 01_demo.ipynb is a symbolic link, {NOT_FOLLOWED}; "
        "hand in the .ipynb file you worked in")
    assert format_error(read_notebook, tmp_path / "lms" / "team01" / "01_demo.ipynb") == (
        f"01_demo.ipynb is a symbolic link, {NOT_FOLLOWED}")


def test_a_linked_folder_inside_a_hand_in_is_not_entered(tmp_path):
    notebook(tmp_path / "elsewhere" / "answers.ipynb")
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "sub").symlink_to(tmp_path / "elsewhere")
    assert format_error(find_notebook, tmp_path / "team").startswith("expected exactly one notebook in team/, found none")


def test_a_fifo_named_like_the_notebook_is_never_opened(tmp_path):
    (tmp_path / "team").mkdir()
    os.mkfifo(tmp_path / "team" / "01_demo.ipynb")
    error = finishes(find_notebook, tmp_path / "team", "01_demo.ipynb")
    assert str(error) == ("expected exactly one notebook in team/, found none; 01_demo.ipynb is a FIFO (named pipe), "
                          "not a notebook file; hand in the .ipynb file you worked in")
    assert str(finishes(read_notebook, tmp_path / "team" / "01_demo.ipynb")) == (
        "01_demo.ipynb is a FIFO (named pipe), not a notebook file")
    assert str(finishes(find_notebook, tmp_path / "team" / "01_demo.ipynb")) == (
        "01_demo.ipynb is a FIFO (named pipe), not a notebook")


def test_a_device_is_never_read():
    assert format_error(read_notebook, Path("/dev/zero")) == "zero is a device file, not a notebook file"


def test_reads_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(handins, "MAX_NOTEBOOK_BYTES", 2 * 2**20)
    big = tmp_path / "big.ipynb"
    with big.open("wb") as f:
        f.truncate(3 * 2**20)  # sparse: the size alone refuses it
    assert format_error(read_notebook, big) == (
        "big.ipynb is 3 MB; the grader reads notebooks up to 2 MB: clear the outputs (Edit > Clear All Outputs) and "
        "save it again")
    assert read_notebook(notebook(tmp_path / "small.ipynb")).startswith(b"{")


def test_a_hand_in_with_too_many_files_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(handins, "MAX_ENTRIES", 20)
    for i in range(25):
        (tmp_path / "team" / f"d{i}").mkdir(parents=True)
    assert format_error(find_notebook, tmp_path / "team") == (
        "team/ holds more than 20 files and folders; hand in your notebook, not a whole disk")


@pytest.mark.parametrize("name, message", [("answers.py", "answers.py is not a Jupyter notebook (.ipynb)"),
                                           ("gone.ipynb", "gone.ipynb does not exist")])
def test_a_wrong_or_missing_path(tmp_path, name, message):
    if name.endswith(".py"):
        (tmp_path / name).write_text("x = 1")
    assert format_error(find_notebook, tmp_path / name).startswith(message)


def test_an_unreadable_folder_is_a_format_error(tmp_path):
    """Read as a TA's ordinary account reads: in a child without the capabilities that let root read
    every folder (the same as any uid's, which is all a non-root account has)."""
    (tmp_path / "team" / "locked").mkdir(parents=True)
    (tmp_path / "team" / "locked").chmod(0)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            isolation._drop_privileges(None)
            os.write(write_end, format_error(find_notebook, tmp_path / "team").encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        message = answer.read().decode()
    os.waitpid(pid, 0)
    (tmp_path / "team" / "locked").chmod(0o700)
    assert message == "team/locked cannot be read (Permission denied)"


# --- what a rerun compares -----------------------------------------------------------------------


def test_the_digest_is_the_notebook_hash_or_changes_only_with_the_reason(tmp_path):
    path = notebook(tmp_path / "team" / "01_demo.ipynb")
    assert submission_digest(tmp_path / "team") == submission_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    path.unlink()
    (tmp_path / "team" / "notes.txt").write_text("no notebook")
    empty = submission_digest(tmp_path / "team")
    (tmp_path / "team" / "more_notes.txt").write_text("still none")
    assert submission_digest(tmp_path / "team") == empty  # the same reason: nothing to regrade
    os.mkfifo(tmp_path / "team" / "01_demo.ipynb")
    assert finishes(submission_digest, tmp_path / "team") not in (empty, "")
    assert submission_digest(tmp_path / "gone") not in (empty, "")


# --- which entries of a path are hand-ins --------------------------------------------------------


def test_a_samples_folder_leaves_its_expected_scores_out_silently(tmp_path):
    notebook(tmp_path / "samples" / "correct.ipynb")
    notebook(tmp_path / "samples" / "mistake.ipynb")
    (tmp_path / "samples" / "expected.json").write_text("{}")
    (tmp_path / "samples" / "expected.csv").write_text("")
    found = finishes(discover, [tmp_path / "samples"])
    assert sorted(found.handins) == ["correct", "mistake"]
    assert found.skipped == [(f"{tmp_path}/samples/expected.csv", "not a notebook (.ipynb) or a folder")]


def test_a_batch_folder_grades_notebooks_and_folders_and_names_every_other_entry(tmp_path):
    batch = tmp_path / "lms"
    notebook(batch / "team01.ipynb")
    notebook(batch / "team02" / "work.ipynb")
    (batch / "team03").mkdir()  # a folder without a notebook is still a hand-in: its row says why
    notebook(batch / ".hidden_team" / "01_demo.ipynb")
    (batch / ".DS_Store").write_bytes(b"\0")
    (batch / "grades.csv").write_text("team,points\n")
    (batch / "team04.zip").write_bytes(b"PK")  # a hand-in: its row says it is no readable archive
    (batch / "team08.tar.gz").write_bytes(b"\x1f\x8b")
    (batch / "team05").symlink_to(batch / "team02")
    (batch / "team06.ipynb").symlink_to(batch / "team01.ipynb")
    os.mkfifo(batch / "team07.ipynb")
    found = finishes(discover, [batch])
    assert found.handins == {"team01": batch / "team01.ipynb", "team02": batch / "team02", "team03": batch / "team03",
                             "team04": batch / "team04.zip"}
    assert found.skipped == [
        (f"{batch}/.DS_Store", "hidden: a regular file whose name starts with a dot"),
        (f"{batch}/.hidden_team", "hidden: a folder whose name starts with a dot"),
        (f"{batch}/grades.csv", "not a notebook (.ipynb) or a folder"),
        (f"{batch}/team05", f"a symbolic link to {batch}/team02, which is never followed: copy the notebook or folder "
                            "itself here to grade it"),
        (f"{batch}/team06.ipynb", f"a symbolic link to {batch}/team01.ipynb, which is never followed: copy the "
                                  "notebook or folder itself here to grade it"),
        (f"{batch}/team07.ipynb", "not a notebook but a FIFO (named pipe)"),
        (f"{batch}/team08.tar.gz", "an archive other than .zip: unpack it into a folder of its own to grade it"),
    ]


def test_one_team_folder_is_one_hand_in_and_the_tas_own_links_are_followed(tmp_path):
    notebook(tmp_path / "team01" / "01_demo.ipynb")
    (tmp_path / "team01" / "data.csv").write_text("1,2\n")
    (tmp_path / "latest").symlink_to(tmp_path / "team01")
    assert discover([tmp_path / "team01"]).handins == {"team01": tmp_path / "team01"}
    assert discover([tmp_path / "latest"]).handins == {"latest": tmp_path / "latest"}
    assert find_notebook(tmp_path / "latest") == tmp_path / "team01" / "01_demo.ipynb"


def test_names_that_are_not_utf8_become_escaped_ids_and_a_taken_id_is_skipped(tmp_path):
    batch = tmp_path / "lms"
    batch.mkdir()
    notebook(Path(os.fsdecode(bytes(batch) + b"/caf\xe9.ipynb")))
    notebook(batch / "team" / "01_demo.ipynb")
    notebook(batch / "team.ipynb")
    found = discover([batch])
    assert sorted(found.handins) == ["caf\\xe9", "team"]
    assert found.handins["team"] == batch / "team"
    assert found.skipped == [(f"{batch}/team.ipynb", f"its submission id `team` is taken by {batch}/team; rename one "
                                                     "of them")]
    assert find_notebook(found.handins["caf\\xe9"]).name == os.fsdecode(b"caf\xe9.ipynb")


def test_a_missing_path_is_the_tas_mistake(tmp_path):
    assert format_error(discover, [tmp_path / "nowhere"]) == f"{tmp_path}/nowhere does not exist"


def test_a_failure_of_the_grader_on_an_odd_hand_in_is_a_format_error_with_a_neutral_message(tmp_path, monkeypatch):
    def bug(folder, name):
        raise TypeError("pop expected at most 1 argument, got 2")

    monkeypatch.setattr(handins, "_notebooks_in", bug)
    (tmp_path / "team").mkdir()
    assert format_error(find_notebook, tmp_path / "team") == (
        "the grader could not read team: a fault of the grader's own code, not of the hand-in; please tell the "
        "course staff")


# --- .zip hand-ins (what `autograder pack` writes, or a student's own zip) ------------------------


def zipped(path: Path, members: dict[str, bytes], links: dict[str, str] = ()) -> Path:
    import stat
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in dict(links).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def test_the_notebook_inside_a_zip_is_read_by_name_and_hashed_like_the_notebook_itself(tmp_path):
    data = notebook(tmp_path / "01_demo.ipynb").read_bytes()
    archive = zipped(tmp_path / "lms" / "team01" / "team01.zip",
                     {"work/01_demo.ipynb": data, "__MACOSX/work/._01_demo.ipynb": b"\0\5junk",
                      "work/.ipynb_checkpoints/x.ipynb": b"{}", "notes.txt": b"hi"})
    assert discover([tmp_path / "lms"]).handins == {"team01": tmp_path / "lms" / "team01"}
    found = find_notebook(tmp_path / "lms" / "team01")
    assert found == archive
    assert handins.notebook_bytes(found) == ("01_demo.ipynb", data)
    assert submission_hash(found) == hashlib.sha256(data).hexdigest() == submission_hash(tmp_path / "01_demo.ipynb")
    with handins.notebook_file(found) as copy:
        assert copy.read_bytes() == data and copy.name == "01_demo.ipynb"
    assert not copy.exists()
    assert handins.read_manifest(found) is None


def test_a_zip_never_yields_a_link_a_bomb_or_garbage(tmp_path, monkeypatch):
    link = zipped(tmp_path / "link.zip", {}, links={"01_demo.ipynb": "/course/source/01_demo/01_demo.ipynb"})
    assert format_error(submission_hash, link).startswith("expected exactly one notebook in link.zip/, found none")
    monkeypatch.setattr(handins, "MAX_NOTEBOOK_BYTES", 2**20)
    bomb = zipped(tmp_path / "bomb.zip", {"01_demo.ipynb": b" " * (3 * 2**20)})  # 3 MB unpacked, a few KB packed
    assert bomb.stat().st_size < 2**20
    assert format_error(handins.notebook_bytes, bomb) == (
        "bomb.zip is 3 MB; the grader reads notebooks up to 1 MB: clear the outputs (Edit > Clear All Outputs) and "
        "save it again")
    (tmp_path / "fake.zip").write_bytes(b"PK\3\4 not really")
    assert format_error(handins.notebook_bytes, tmp_path / "fake.zip") == (
        "fake.zip is not a readable .zip archive: hand in the notebook (.ipynb) itself, or pack it with "
        "`autograder pack`")
    two = zipped(tmp_path / "two.zip", {"a.ipynb": b"{}", "b/01_demo.ipynb": b"{}"})
    assert handins.notebook_bytes(two, "01_demo.ipynb") == ("01_demo.ipynb", b"{}")
    assert "found 2: a.ipynb, b/01_demo.ipynb" in format_error(handins.notebook_bytes, two)
    broken = zipped(tmp_path / "broken.zip", {"01_demo.ipynb": b"{}", "handin.json": b"[1, 2"})
    assert format_error(handins.read_manifest, broken) == (
        "broken.zip/handin.json is not valid JSON: pack the notebook again with `autograder pack`")
    huge = zipped(tmp_path / "huge.zip", {"01_demo.ipynb": b"{}", "handin.json": b'{"team": "team01", "n": 1%s}' %
                                         (b"0" * 5000)})
    assert handins.read_manifest(huge)["team"] == "team01"  # a number beyond int's text limit is no reason to fail


def test_pack_writes_the_notebook_and_who_handed_it_in(tmp_path):
    import json

    from autograder.student.packing import PackError, members_for, pack
    from autograder.course.roster import Member, Roster, Team

    source = notebook(tmp_path / "01_demo.ipynb")
    archive = pack(source, "team07", ["s1", "s2"], validation={"ok": True})
    assert archive == tmp_path / "team07_01_demo.zip"
    manifest = handins.read_manifest(archive)
    assert manifest["team"] == "team07" and manifest["members"] == ["s1", "s2"] and manifest["assignment"] == "01_demo"
    assert manifest["notebook_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert manifest["validation"] == {"ok": True}
    assert json.loads(json.dumps(manifest)) == manifest
    assert handins.notebook_bytes(archive) == ("01_demo.ipynb", source.read_bytes())
    roster = Roster({"team07": Team("team07", (Member("s1", "A"), Member("s2", "B")))})
    assert members_for("team07", [], roster) == ["s1", "s2"]
    with pytest.raises(PackError, match="s9 not in team team07 on the course roster"):
        members_for("team07", ["s9"], roster)
    with pytest.raises(PackError, match="team team99 is not on the course roster"):
        members_for("team99", [], roster)
    with pytest.raises(PackError, match="--members"):
        members_for("team07", [], None)
