"""One source for every published number: the README's tables and the docstring's headline sentence
repeat the summary files that benchmarks/seeds.py wrote, cell for cell."""
import re

import autoencoder_mnist as am
from conftest import REPO

SOURCE = re.compile(r"\]\((docs/results/[^)]+\.md)\)")


def summary(path):
    """A summary file's seeds and its rows: {(features, reduction, clusterer): {column: cell}}."""
    lines = (REPO / path).read_text().splitlines()
    seeds = [int(seed) for seed in re.search(r"over seeds ([\d, ]+)", lines[0]).group(1).split(", ")]
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    header, rows = table[0], table[1:]
    return seeds, {tuple(row[:3]): dict(zip(header, row)) for row in rows}


def worst_seed(row):
    """The worst seed's ACC / NMI as the summary gives it; older summaries list only each seed's ACC."""
    if "worst seed's ACC / NMI" in row:
        return row["worst seed's ACC / NMI"]
    per_seed = next(cell for column, cell in row.items() if column.startswith("ACC per seed"))
    return f"{min(float(value) for value in per_seed.split(' / ')):.3f} / —"


def test_readme_tables_repeat_their_summaries():
    lines = [line for line in (REPO / "README.md").read_text().splitlines()
             if line.startswith("| ") and SOURCE.search(line)]
    assert len(lines) >= 7
    for line in lines:
        cells = [cell.strip().replace("**", "") for cell in line.strip("|").split("|")]
        seeds, rows = summary(SOURCE.search(line).group(1))
        row = rows[tuple(cells[1].split(", "))]
        assert cells[2] == (f"{seeds[0]}-{seeds[-1]}" if seeds[1:] else str(seeds[0])), line
        assert seeds == list(range(seeds[0], seeds[-1] + 1)), line
        assert (cells[3], cells[4]) == (row["ACC"], row["NMI"]), line
        assert cells[5] == worst_seed(row), line


def test_the_docstring_states_the_readmes_bold_row_and_its_commands():
    stated = re.search(r"at ACC (\d\.\d{3}) / NMI (\d\.\d{3}), the mean of seeds (\d+)-(\d+)",
                       " ".join(am.__doc__.split()))
    assert stated, "the docstring's headline sentence moved; keep it checked here"
    readme = (REPO / "README.md").read_text()
    bold = [line for line in readme.splitlines() if line.startswith("| **")]
    assert len(bold) == 2 and "latent, student, softmax" in bold[0]
    seeds, rows = summary(SOURCE.search(bold[0]).group(1))
    row = rows["latent", "student", "softmax"]
    assert stated.groups() == (row["ACC"].split(" +- ")[0], row["NMI"].split(" +- ")[0], str(seeds[0]), str(seeds[-1]))
    # The README's first command block is the docstring's, line for line.
    block = readme.split("```bash\n")[1].split("```")[0].strip().splitlines()
    commands = am.__doc__.split("Commands:\n")[1].split("\n\n")[0].splitlines()
    assert block == [line.strip() for line in commands]


def test_the_readmes_backend_ratios_repeat_their_summary():
    readme = " ".join((REPO / "README.md").read_text().split())
    stated = re.search(r"took (\d\.\d\d)x and (\d\.\d\d)x as long under PyTorch and (\d\.\d\d)x and "
                       r"(\d\.\d\d)x under JAX \(seeds (\d) and (\d)[^)]*\]\((docs/results/[^)]+\.md)\)", readme)
    assert stated, "the README's sentence on the backends' times moved; keep it checked here"
    table = [[cell.strip() for cell in line.strip("|").split("|")]
             for line in (REPO / stated.group(7)).read_text().splitlines() if line.startswith("| ")]
    rows = {(row[0], row[2]): dict(zip(table[0], row)) for row in table[1:]}
    seeds = stated.group(5, 6)
    expected = [rows[backend, seed]["against tensorflow"].removesuffix("x")
                for backend in ("torch", "jax") for seed in seeds]
    assert list(stated.group(1, 2, 3, 4)) == expected


def test_the_readmes_speed_ratio_repeats_its_report():
    readme = " ".join((REPO / "README.md").read_text().split())
    stated = re.search(r"and (\d\.\d\d)x on an ([^,(]+?), where[^]]*\]\((docs/results/speed/[^)]+\.md)\)", readme)
    assert stated, "the README's sentence on the student's time moved; keep it checked here"
    report = (REPO / stated.group(3)).read_text()
    assert stated.group(2).split()[0] in report.splitlines()[2]  # the CPU the report names
    ratio = re.search(r"^whole run +[\d.]+ +[\d.]+ +(\d\.\d\d)$", report, re.MULTILINE).group(1)
    assert stated.group(1) == ratio and "student run against the baseline" in report


def test_the_readmes_size_tables_and_protocol_ratio_repeat_their_reports():
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Size\n")[1].split("\n## ")[0]
    tables = [(re.findall(r"\]\((docs/results/scale/[^)]+\.md)\)", before)[-1], table)
              for before, table in re.findall(r"([^|]*)\n\n((?:\|.*\n)+)", section)]
    assert tables, "the Size section's table moved; keep it checked here"
    for source, table in tables:  # each table repeats the report linked last before it
        rows = {cells[0]: cells[1:] for cells in ([cell.strip() for cell in line.strip().strip("|").split("|")]
                                                   for line in table.splitlines())}
        curve = {cells[0]: cells[1:-1] for cells in ([cell.strip() for cell in line.strip().strip("|").split("|")]
                                                      for line in (REPO / source).read_text().splitlines()
                                                      if line.startswith("| "))}
        images = [sum(int(part.replace(",", "")) for part in cell.split(": ")[1].split(" + "))
                  for cell in curve["stage"]]
        assert rows["images (training + scored)"] == [f"{count:,}" for count in images], source
        assert rows["whole run, minutes"] == [f"{float(s) / 60:.1f}" for s in curve["whole run (wall)"]], source
        assert rows["peak memory, all processes, GiB"] == [
            f"{int(mb.replace(',', '')) / 1024:.1f}" for mb in curve["peak memory, all processes (MB)"]], source
    stated = re.search(r"took (\d\.\d\d)x the held-out run's time[^]]*\]\((docs/results/[^)]+\.md)\)",
                       " ".join(section.split()))
    assert stated, "the Size section's sentence on the papers' protocol moved; keep it checked here"
    report = (REPO / stated.group(2)).read_text()
    assert re.search(r"protocol run against the student run, whole run: median ratio (\d\.\d\d)",
                     report).group(1) == stated.group(1)
