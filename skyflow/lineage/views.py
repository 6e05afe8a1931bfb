"""Where to look at a pipeline's runs in the MLflow UI: its experiment, on the model-training view."""

from __future__ import annotations

from skyflow.errors import LineageError
from skyflow.lineage.mlflow_names import TAG_KIND, TAG_PIPELINE
from skyflow.lineage.recorder import check_tracking_uri, describe_tracking


def pipeline_experiment(tracking_uri: str, pipeline: str | None = None) -> tuple[str, str] | None:
    """(experiment id, pipeline name) of ``pipeline``, else of the pipeline that ran last; None when
    the store holds no skyflow run yet. Raises LineageError for a pipeline it has never seen."""
    check_tracking_uri(tracking_uri)
    from skyflow.lineage.mlflow_client import open_client, store_failures_as_lineage_errors
    from skyflow.lineage.mlflow_store import skyflow_experiment_ids

    with store_failures_as_lineage_errors(describe_tracking(tracking_uri)):
        client = open_client(tracking_uri)
        if pipeline is not None:
            experiment = client.get_experiment_by_name(pipeline)
            if experiment is None or TAG_PIPELINE not in experiment.tags:
                from skyflow.matching import close_matches

                known = [e.name for e in client.search_experiments(filter_string=f"tags.`{TAG_PIPELINE}` != ''")]
                matches = close_matches(pipeline, known)
                raise LineageError(f"{describe_tracking(tracking_uri)} has no runs of pipeline {pipeline!r}"
                                   + (f"; did you mean {', '.join(matches)}?" if matches else
                                      f"; pipelines there: {', '.join(known) or 'none yet'}"))
            return experiment.experiment_id, pipeline
        experiments = skyflow_experiment_ids(client)
        if not experiments:
            return None
        newest = client.search_runs(experiments, f"tags.`{TAG_KIND}` = 'pipeline_run'", max_results=1,
                                    order_by=["attributes.start_time DESC"])
        if not newest:
            return None
        return newest[0].info.experiment_id, newest[0].data.tags.get(TAG_PIPELINE, "")


def experiment_url(ui_url: str, experiment_id: str) -> str:
    """The experiment's runs in the UI's model-training view. MLflow 3.x opens on its GenAI view
    (traces) unless the link asks for `workflowType=machine_learning`; `compareRunsMode=TABLE`
    alone does not switch it (checked against the 3.17 UI)."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"
