"""Independent parts of a planning problem: stages whose placements cannot interact through egress.

Two stages interact when one artifact links them: a producer and its consumers, or the consumers of
one pipeline input (it is moved once to each location that reads it). Without a time objective, a
deadline or a budget (which add up or take the maximum over every stage), the cheapest plan of the
whole is the cheapest plan of each part, so each part is planned on its own: a smaller program each,
and parts shaped as trees go to the exact DP even when the whole is not a forest.
"""

from __future__ import annotations

from skyflow.planner.problem import Problem, Transfer


class DisjointSets:
    """Union-find over stage indices (path halving)."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def root(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> bool:
        """Join the sets of ``a`` and ``b``; False when they were one set already."""
        ra, rb = self.root(a), self.root(b)
        if ra == rb:
            return False
        self.parent[ra] = rb
        return True


def independent_parts(problem: Problem) -> list[list[int]]:
    """The stage indices of each part (in pipeline order), parts ordered by their first stage."""
    sets = DisjointSets(len(problem.names))
    for t in problem.transfers:
        linked = list(t.consumers) + ([t.producer] if t.producer is not None else [])
        for other in linked[1:]:
            sets.union(linked[0], other)
    parts: dict[int, list[int]] = {}
    for s in range(len(problem.names)):
        parts.setdefault(sets.root(s), []).append(s)
    return sorted(parts.values(), key=lambda part: part[0])


def part_problem(problem: Problem, stages: list[int]) -> Problem:
    """The problem of ``stages`` alone (a part: no transfer links them to other stages), indexed from 0;
    each stage keeps its options, in the same order."""
    index = {s: i for i, s in enumerate(stages)}
    transfers = [Transfer(t.artifact, t.size_gb, None if t.producer is None else index[t.producer], t.source,
                          tuple(index[c] for c in t.consumers))
                 for t in problem.transfers if t.consumers[0] in index]
    ordering = [(index[a], index[b]) for a, b in problem.ordering if a in index and b in index]
    return Problem([problem.names[s] for s in stages], [problem.options[s] for s in stages], transfers, ordering,
                   problem.egress, problem.transfer_gb_per_hour, dict(problem.egress_alias))
