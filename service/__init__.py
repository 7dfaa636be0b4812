"""diplotone service: the FastAPI app, settings, store, batching and training jobs."""
