"""Stage order and cycles come from the standard library: the same order networkx gave, without its import."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from skyflow.errors import SpecError
from skyflow.spec.loader import load_pipeline

EXAMPLES = Path(__file__).parents[3] / "examples"


def _random_dag_yaml(rng: random.Random, size: int) -> tuple[str, list[str], list[tuple[str, str]]]:
    names = [f"s{i}" for i in rng.sample(range(size * 3), size)]
    lines, links = ["name: random", "stages:"], []
    for index, name in enumerate(names):
        lines += [f"  {name}:", "    run: 'true'", "    outputs: [o]"]
        earlier = [n for n in names[:index] if rng.random() < 0.3]
        if earlier:
            lines.append("    inputs: {" + ", ".join(f"i{j}: {n}.o" for j, n in enumerate(earlier)) + "}")
            links += [(n, name) for n in earlier]
    return "\n".join(lines) + "\n", names, links


@pytest.mark.parametrize("seed", range(25))
def test_order_is_networkx_lexicographic_order(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    text, names, links = _random_dag_yaml(rng, rng.randint(1, 30))
    # Names are drawn at random, so place in the file (the tie-break) differs from name order.
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    graph.add_edges_from(links)
    position = {n: i for i, n in enumerate(names)}
    expected = tuple(nx.lexicographical_topological_sort(graph, key=lambda n: position[n]))
    assert load_pipeline(str(path)).order == expected


def test_cycle_is_named_from_its_earliest_stage(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text("name: x\nstages:\n  free: {run: x}\n  c: {run: x, outputs: [o], inputs: {i: b.o}}\n"
                    "  a: {run: x, outputs: [o], inputs: {i: c.o}}\n  b: {run: x, outputs: [o], depends_on: [a]}\n")
    with pytest.raises(SpecError, match=r"pipeline.yaml:4:\d+: stages form a cycle: c -> a -> b -> c"):
        load_pipeline(str(path))


def test_validating_an_example_imports_no_networkx() -> None:
    code = ("import sys; from skyflow.spec.loader import load_pipeline; "
            f"load_pipeline({str(EXAMPLES / 'rlhf' / 'pipeline.yaml')!r}); print('networkx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
