"""The pipeline's DAG: which artifact flows from where to which stage, in what order."""

from __future__ import annotations

import graphlib
import hashlib
import heapq
import json
from dataclasses import dataclass, field
from typing import Literal

from skyflow.errors import Issue, SpecError
from skyflow.matching import close_matches
from skyflow.spec.models import PipelineSpec, Stage
from skyflow.spec.source import SourceMap

URI_PREFIXES = ("/", "~", "./", "../")


def is_uri(ref: str) -> bool:
    return "://" in ref or ref.startswith(URI_PREFIXES)


@dataclass(frozen=True)
class DataEdge:
    """One artifact consumed by one stage: from a stage output, a pipeline input, or a URI."""

    consumer: str
    input_name: str
    kind: Literal["stage", "input", "uri"]
    producer: str | None  # the producing stage for kind == "stage"
    artifact: str  # output name, pipeline input name, or the URI itself

    @property
    def ref(self) -> str:
        return f"{self.producer}.{self.artifact}" if self.kind == "stage" else self.artifact


@dataclass(frozen=True)
class ResolvedPipeline:
    """A validated pipeline with its DAG resolved; the planner and runner start from this."""

    spec: PipelineSpec
    path: str
    base_dir: str
    order: tuple[str, ...]
    edges: tuple[DataEdge, ...]
    ordering: tuple[tuple[str, str], ...]  # depends_on: (before, after)
    source: SourceMap | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stages(self) -> dict[str, Stage]:
        return self.spec.stages

    def inputs_of(self, stage: str) -> list[DataEdge]:
        return [e for e in self.edges if e.consumer == stage]

    def upstream(self, stage: str) -> list[str]:
        before = {e.producer for e in self.edges if e.consumer == stage and e.producer}
        before |= {a for a, b in self.ordering if b == stage}
        return [s for s in self.order if s in before]

    def downstream(self, stage: str) -> list[str]:
        after = {e.consumer for e in self.edges if e.producer == stage}
        after |= {b for a, b in self.ordering if a == stage}
        return [s for s in self.order if s in after]

    def digest(self) -> str:
        """sha256 of the validated spec (stable across key order and formatting)."""
        payload = json.dumps(self.spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


def resolve_graph(spec: PipelineSpec, smap: SourceMap, path: str, base_dir: str) -> ResolvedPipeline:
    """Resolve references, reject unknown ones and cycles, and order the stages."""
    issues: list[Issue] = []
    edges: list[DataEdge] = []
    ordering: list[tuple[str, str]] = []
    stage_names = list(spec.stages)
    for clash in sorted(set(spec.stages) & set(spec.inputs)):
        issues.append(Issue(f"stages.{clash}: the name {clash!r} is both a stage and a pipeline input",
                            smap.position(("stages", clash), key=True),
                            hint="Rename one of them so references are unambiguous."))
    for name, stage in spec.stages.items():
        for input_name, ref in stage.inputs.items():
            edge = _resolve_ref(spec, name, input_name, ref, smap, issues)
            if edge:
                edges.append(edge)
        for index, before in enumerate(stage.depends_on):
            where = smap.position(("stages", name, "depends_on", index))
            if before == name:
                issues.append(Issue(f"stages.{name}.depends_on: a stage cannot depend on itself", where))
            elif before not in spec.stages:
                issues.append(Issue(f"stages.{name}.depends_on: no stage named {before!r}", where,
                                    matches=tuple(close_matches(before, stage_names))))
            else:
                ordering.append((before, name))
    _check_schedule(spec, smap, issues)
    _check_stores(spec, smap, issues)
    if issues:
        raise SpecError(issues)
    links = [(e.producer, e.consumer) for e in edges if e.producer] + ordering
    order, cycle = _order(stage_names, links)
    if cycle:
        raise SpecError(Issue(f"stages form a cycle: {' -> '.join(cycle)}",
                              smap.position(("stages", cycle[0]), key=True),
                              hint="Remove one of these inputs or depends_on entries."))
    return ResolvedPipeline(spec=spec, path=path, base_dir=base_dir, order=order, edges=tuple(edges),
                            ordering=tuple(ordering), source=smap)


def _order(names: list[str], links: list[tuple[str, str]]) -> tuple[tuple[str, ...], list[str]]:
    """(the stages in dependency order, ties broken by their place in the file; the cycle when there
    is one, from its earliest stage back to it)."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter({n: () for n in names})
    for before, after in links:
        sorter.add(after, before)
    position = {n: i for i, n in enumerate(names)}
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        loop = list(exc.args[1][:-1])
        start = loop.index(min(loop, key=position.__getitem__))
        loop = loop[start:] + loop[:start]
        return (), [*loop, loop[0]]
    ready = [(position[n], n) for n in sorter.get_ready()]
    heapq.heapify(ready)
    order = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        sorter.done(name)
        for after in sorter.get_ready():
            heapq.heappush(ready, (position[after], after))
    return tuple(order), []


def _resolve_ref(spec: PipelineSpec, stage: str, input_name: str, ref: str, smap: SourceMap,
                 issues: list[Issue]) -> DataEdge | None:
    where = smap.position(("stages", stage, "inputs", input_name))
    label = f"stages.{stage}.inputs.{input_name}"
    if is_uri(ref):
        return DataEdge(stage, input_name, "uri", None, ref)
    if "." in ref:
        producer, _, output = ref.partition(".")
        if producer not in spec.stages:
            issues.append(Issue(f"{label}: {ref!r} names no stage {producer!r}", where,
                                matches=tuple(f"{m}.{output}" for m in close_matches(producer, list(spec.stages)))))
            return None
        if producer == stage:
            issues.append(Issue(f"{label}: stage {stage!r} cannot consume its own output {ref!r}", where))
            return None
        declared = spec.stages[producer].outputs
        if output not in declared:
            hint = (f"Declare it: stages.{producer}.outputs: {{{output}: {{size_gb: ...}}}}." if not declared
                    else f"Outputs of {producer}: {', '.join(declared)}.")
            issues.append(Issue(f"{label}: stage {producer!r} declares no output {output!r}", where,
                                matches=tuple(f"{producer}.{m}" for m in close_matches(output, list(declared))),
                                hint=hint))
            return None
        return DataEdge(stage, input_name, "stage", producer, output)
    if ref in spec.inputs:
        return DataEdge(stage, input_name, "input", None, ref)
    outputs = [f"{s}.{o}" for s, st in spec.stages.items() for o in st.outputs if s != stage]
    issues.append(Issue(f"{label}: {ref!r} is no pipeline input, stage output or URI", where,
                        matches=tuple(close_matches(ref, list(spec.inputs) + outputs)),
                        hint="Use an input name, STAGE.OUTPUT, or a URI like s3://bucket/path."))
    return None


def _check_schedule(spec: PipelineSpec, smap: SourceMap, issues: list[Issue]) -> None:
    if spec.schedule is None:
        return
    for index, ref in enumerate(spec.schedule.on_change):
        if not is_uri(ref) and ref not in spec.inputs:
            issues.append(Issue(f"schedule.on_change: {ref!r} is no pipeline input or URI",
                                smap.position(("schedule", "on_change", index)),
                                matches=tuple(close_matches(ref, list(spec.inputs)))))
    unknown = set(spec.schedule.params) - set(spec.params)
    for name in sorted(unknown):
        issues.append(Issue(f"schedule.params: the pipeline has no param {name!r}",
                            smap.position(("schedule", "params", name), key=True),
                            matches=tuple(close_matches(name, list(spec.params)))))


def _check_stores(spec: PipelineSpec, smap: SourceMap, issues: list[Issue]) -> None:
    from skyflow.spec.resources import CLOUDS

    for key in spec.stores:
        cloud = key.split("/")[0]
        if key != "local" and cloud not in CLOUDS:
            issues.append(Issue(f"stores: {key!r} is not 'local', a cloud, or cloud/region",
                                smap.position(("stores", key), key=True),
                                matches=tuple(close_matches(cloud, [*CLOUDS]))))
