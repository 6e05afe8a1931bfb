"""Text renderings of a pipeline's DAG: plain text, Mermaid and Graphviz dot."""

from __future__ import annotations

from skyflow.spec.graph import ResolvedPipeline


def _resources_label(pipeline: ResolvedPipeline, name: str) -> str:
    stage = pipeline.stages[name]
    res = stage.resources
    parts = [" or ".join(str(a) for a in res.accelerators)] if res.accelerators else []
    if res.cpus:
        parts.append(f"cpus={res.cpus}")
    if stage.num_nodes > 1:
        parts.append(f"x{stage.num_nodes} nodes")
    if res.use_spot:
        parts.append("spot")
    if stage.service:
        parts.append("service")
    return ", ".join(parts) or "any"


def render_dag(pipeline: ResolvedPipeline, fmt: str = "text") -> str:
    if fmt == "mermaid":
        return _mermaid(pipeline)
    if fmt == "dot":
        return _dot(pipeline)
    return _text(pipeline)


def _text(pipeline: ResolvedPipeline) -> str:
    lines = [f"pipeline {pipeline.name}: {len(pipeline.order)} stages"]
    for name in pipeline.order:
        lines.append(f"  {name}  [{_resources_label(pipeline, name)}]")
        for edge in pipeline.inputs_of(name):
            lines.append(f"    <- {edge.input_name}: {edge.ref}")
        for before in sorted(a for a, b in pipeline.ordering if b == name):
            lines.append(f"    after {before}")
        for output in pipeline.stages[name].outputs:
            lines.append(f"    -> {output}")
    return "\n".join(lines)


def _mermaid(pipeline: ResolvedPipeline) -> str:
    lines = ["flowchart LR"]
    for name in pipeline.order:
        lines.append(f'  {name}["{name}<br/>{_resources_label(pipeline, name)}"]')
    for key, spec_input in pipeline.spec.inputs.items():
        lines.append(f'  input_{key}[("{key}<br/>{spec_input.uri}")]')
    for edge in pipeline.edges:
        source = edge.producer if edge.kind == "stage" else f"input_{edge.artifact}" if edge.kind == "input" else None
        if source is None:
            continue
        lines.append(f"  {source} -->|{edge.artifact}| {edge.consumer}")
    lines.extend(f"  {a} -.-> {b}" for a, b in pipeline.ordering)
    return "\n".join(lines)


def _dot(pipeline: ResolvedPipeline) -> str:
    lines = [f'digraph "{pipeline.name}" {{', "  rankdir=LR;"]
    for name in pipeline.order:
        lines.append(f'  "{name}" [shape=box, label="{name}\\n{_resources_label(pipeline, name)}"];')
    for key in pipeline.spec.inputs:
        lines.append(f'  "input:{key}" [shape=cylinder, label="{key}"];')
    for edge in pipeline.edges:
        if edge.kind == "uri":
            continue
        source = edge.producer if edge.kind == "stage" else f"input:{edge.artifact}"
        lines.append(f'  "{source}" -> "{edge.consumer}" [label="{edge.artifact}"];')
    lines.extend(f'  "{a}" -> "{b}" [style=dashed];' for a, b in pipeline.ordering)
    lines.append("}")
    return "\n".join(lines)
