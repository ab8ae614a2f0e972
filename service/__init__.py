"""GRAM Serve: the HTTP front end, the continuous trajectory batching engine, queues and metrics."""
