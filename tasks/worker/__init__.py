"""The Celery side: the app, the bootstep and node, the router and lane tasks."""
