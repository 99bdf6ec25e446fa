"""The course's pages: one source for every number, the same six parts in every lesson, a short front door.

Every "What to expect" block and the course table are written by benchmarks/course_pages.py from
benchmarks/course_results.json (what `make course` measured); a page that differs from what it writes fails here,
as a notebook that differs from notebooks/build.py's output fails tests/test_notebooks.py.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import course  # benchmarks/course.py
import course_pages  # benchmarks/course_pages.py

LESSONS = sorted(p.name for p in ROOT.glob("[0-9][0-9]_*") if p.is_dir())
PARTS = ["What you will learn", "Run", "What to expect", "Read the code", "Try next", "Discuss"]
DATA = json.loads(course_pages.DATA.read_text(encoding="utf-8"))


def test_every_generated_block_is_what_the_generator_writes_from_the_course_results():
    assert course_pages.differing() == []


def test_a_number_edited_by_hand_between_the_markers_is_caught():
    page = ROOT / "README.md"
    text = page.read_text(encoding="utf-8")
    block = course_pages.BLOCK.search(text)
    assert block, "README.md holds no generated block"
    edited = text.replace(block["body"], block["body"].replace("%", "0%", 1))
    assert edited != text
    assert course_pages.render(edited, course_pages.blocks(DATA), page) == text


def test_the_results_are_the_course_runs_own_commands():
    """Each technique of benchmarks/course.py has its result, measured with the command course.py runs (no other
    run's numbers put in its place), and nothing else is in the file."""
    names = [name for name, *_ in course.TECHNIQUES]
    assert [t["name"] for t in DATA["techniques"]] == names
    for (name, script, config, _), result in zip(course.TECHNIQUES, DATA["techniques"], strict=True):
        command = result["command"]
        assert command[:4] == ["python", script, "--config", config], name
        assert command[command.index("--output_dir") + 1] == f"runs/course/{name}"
        if name in course.STARTS_FROM:
            assert command[command.index("--model_name_or_path") + 1] == f"runs/course/{course.STARTS_FROM[name]}"
        assert all(flag in command for flag in course.FLAGS.get(name, []))
        assert "per_step" not in result["metrics"]


def test_every_course_run_has_its_block_on_its_lessons_page():
    for result in DATA["techniques"]:
        lesson = course_pages.LESSON_OF.get(result["name"], result["name"])
        text = (ROOT / lesson / "README.md").read_text(encoding="utf-8")
        assert f"<!-- numbers: {result['name']} -->" in text, lesson
    assert "<!-- numbers: course-table -->" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "<!-- numbers: course-times -->" in (ROOT / "COURSE.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("lesson", LESSONS)
def test_a_lesson_readme_has_the_six_parts_in_order(lesson):
    text = (ROOT / lesson / "README.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert [h for h in headings if h in PARTS] == PARTS, headings
    part = {title: re.search(rf"^## {title}\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)[1] for title in PARTS}
    # Run: at most four commands (a line of a ```bash block that starts a command, not `source`, a comment or a
    # continued line)
    lines = "\n".join(re.findall(r"```bash\n(.*?)```", part["Run"], re.DOTALL)).splitlines()
    commands = [line for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith(("#", "source "))
                and not (i and lines[i - 1].rstrip().endswith("\\"))]
    assert 1 <= len(commands) <= 4, commands
    assert "<!-- numbers: " in part["What to expect"]
    assert not re.search(r"\blines? \d+", part["Read the code"]), "name the section banners, not line numbers"
    # Try next: at least three exercises, easy to hard, each with a command and a folded solution
    exercises = part["Try next"]
    assert exercises.count("<details>") >= 3 and exercises.count("</details>") == exercises.count("<details>")
    levels = [m.lower() for m in re.findall(r"\*\*(Easy|Medium|Hard)\b", exercises)]
    assert {"easy", "medium", "hard"} <= set(levels) and levels == sorted(levels, key=["easy", "medium", "hard"].index)
    assert exercises.count("```bash") >= 3
    questions = [line for line in part["Discuss"].splitlines() if re.match(r"\s*(-|\d+\.) ", line)]
    assert 2 <= len(questions) <= 3, questions


def test_course_md_names_every_lesson_folder():
    text = (ROOT / "COURSE.md").read_text(encoding="utf-8")
    assert all(f"({lesson})" in text for lesson in LESSONS), [lesson for lesson in LESSONS if f"({lesson})" not in text]


def test_the_readme_is_a_short_front_door():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 130


def test_no_page_speaks_of_how_the_project_was_made():
    """Words from the project's own making that a learner cannot follow."""
    words = re.compile(r"\b(issues?|bar|lent|sessions?|revisions?)\b", re.IGNORECASE)
    found = []
    for page in course_pages.pages():
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if hit := words.search(line):
                found.append(f"{page.relative_to(ROOT)}:{number}: {hit[0]}")
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        found += [f"{notebook.name}: {hit[0]}" for cell in cells if cell["cell_type"] == "markdown"
                  for hit in [words.search("".join(cell["source"]))] if hit]
    assert found == []


def test_the_generator_runs_as_a_command():
    result = subprocess.run([sys.executable, "benchmarks/course_pages.py", "--check"], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
