"""What `celery -A dagster_celery.app worker` reads for its broker (dagster_celery.make_app imports
this module when it is on PYTHONPATH). Match deploy/celery/dagster.yaml's run_launcher config."""

broker_url = "redis://redis.internal:6379/0"
result_backend = "redis://redis.internal:6379/1"
# One run at a time per worker process: a run is a whole connector sync.
worker_prefetch_multiplier = 1
