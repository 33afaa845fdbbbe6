"""amply-jobs: the Celery workers of the Amply platform and the tooling around them."""
