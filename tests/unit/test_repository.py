"""Repository hygiene: the project speaks of itself only, files stay small, one shipped path (no experiment
switches), every results file is read by something, and no lower layer of the package imports a higher one."""
import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEXT = (".py", ".md", ".ipynb", ".sh", ".toml", ".yaml", ".yml", ".json", ".jsonl", ".csv", ".txt", ".cfg")
# lowest first; a module may import its own layer and those before it
LAYERS = [["config", "models"], ["attention"], ["integrations"], ["store"], ["evaluation"], ["training"],
          ["analysis", "speed"], ["ui"], ["cli"]]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
ENV_FOR_USERS = {"SWAA_CACHE", "SWAA_ATTENTION_BACKEND", "SWAA_JUDGE_URL", "SWAA_JUDGE_MODEL", "SWAA_JUDGE_API_KEY",
                 "OPENAI_BASE_URL", "OPENAI_API_KEY", "TRITON_INTERPRET", "VLLM_CPU_KVCACHE_SPACE"}
# what torchrun and accelerate launch set for the processes they start (read, never a switch of ours)
ENV_FROM_LAUNCHERS = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "ACCELERATE_USE_FSDP", "FSDP_VERSION",
                      "FSDP_CPU_RAM_EFFICIENT_LOADING"}


def _tracked():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / f for f in out if (ROOT / f).is_file()]


def test_the_project_speaks_of_itself_only():
    words = re.compile(r"\bsession \d+|\bsessions \d+|\blent\b|\bgpu box\b|\bticket\b", re.I)
    bad = []
    for f in _tracked():
        if "session" in f.name.lower():
            bad.append(f"file name {f.relative_to(ROOT)}")
        if f.suffix in TEXT and f.name != "test_repository.py":
            for n, line in enumerate(f.read_text(errors="ignore").splitlines(), 1):
                if words.search(line):
                    bad.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not bad, "\n".join(bad[:20])


def test_package_files_are_small_and_say_what_they_hold():
    for f in sorted((ROOT / "swaa").rglob("*.py")):
        lines = f.read_text().splitlines()
        assert len(lines) <= 450, f"{f.relative_to(ROOT)} has {len(lines)} lines (at most 450)"
        if f.name != "__main__.py":
            assert ast.get_docstring(ast.parse(f.read_text())), f"{f.relative_to(ROOT)} has no module docstring"


def test_no_experiment_switches():
    reads = re.compile(r"os\.environ(?:\.get)?\(\s*[\"']([A-Z_0-9]+)|os\.environ\[\s*[\"']([A-Z_0-9]+)|getenv\([\"']([A-Z_0-9]+)")
    found = set()
    for f in (ROOT / "swaa").rglob("*.py"):
        for m in reads.finditer(f.read_text()):
            found.add(next(g for g in m.groups() if g))
    allowed = ENV_FOR_USERS | ENV_FROM_LAUNCHERS
    assert found <= allowed, f"environment variables read that users are not told of: {found - allowed}"


def test_every_results_file_is_read_by_something():
    readers = [f for f in _tracked() if f.suffix in (".py", ".md", ".ipynb") and "benchmarks/results" not in str(f)]
    text = "\n".join(f.read_text(errors="ignore") for f in readers)
    unread = [f.name for f in (ROOT / "benchmarks" / "results").iterdir() if f.name not in text]
    assert not unread, f"benchmarks/results files nothing reads: {unread}"


def _imports(f: Path, package: str):
    tree = ast.parse(f.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_no_lower_layer_imports_a_higher_one():
    bad = []
    for f in sorted((ROOT / "swaa").rglob("*.py")):
        rel = f.relative_to(ROOT).with_suffix("").parts
        if len(rel) < 2 or rel[1] == "__init__":
            continue
        own = RANK.get(rel[1])
        package = ".".join(rel[:-1]) if rel[-1] != "__init__" else ".".join(rel[:-1])
        for mod in _imports(f, package):
            parts = mod.split(".")
            if parts[0] != "swaa" or len(parts) < 2 or parts[1] not in RANK or own is None:
                continue
            if RANK[parts[1]] > own:
                bad.append(f"{'/'.join(rel)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_readme_is_for_users():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) <= 16000, f"README.md has {len(readme)} characters (at most 16,000; design goes in docs/)"
    for section in ("make test", "make figures", "## Quickstart", "## Notebooks", "## Layout", "## Results"):
        assert section in readme, section
