"""`entra_actions_apply`: a reviewed plan applied as a Dagster run (the run config names the
plan), so that it shows in the run history beside the syncs and, like them, runs on the
connector's server. What it does is `entra-pipeline act apply`'s."""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition.
from collections.abc import Mapping

import dagster as dg

from entra_pipeline.actions.apply import apply_plan
from entra_pipeline.resources import ConnectorResource

ACTIONS_JOB = "entra_actions_apply"


class PlanConfig(dg.Config):
    plan_id: str  # the plan to apply: `entra-pipeline act list` shows them


@dg.op(description="Apply a reviewed action plan with the action credential (docs/actions.md).")
def apply_action_plan(
    context: dg.OpExecutionContext, config: PlanConfig, connector: ConnectorResource
) -> dg.Output[None]:
    applied = apply_plan(connector.settings, config.plan_id, say=context.log.info)
    if applied.counts.get("failed"):
        raise dg.Failure(
            f"plan {config.plan_id}: {applied.counts['failed']} action(s) failed (ops.actions)",
            metadata={"counts": dg.MetadataValue.json(applied.counts)},
        )
    return dg.Output(None, metadata={"counts": dg.MetadataValue.json(applied.counts)})


def actions_job(tags: Mapping[str, str]) -> dg.JobDefinition:
    @dg.job(name=ACTIONS_JOB, tags=dict(tags), description=__doc__.split("\n\n")[0])
    def entra_actions_apply() -> None:
        apply_action_plan()

    return entra_actions_apply
