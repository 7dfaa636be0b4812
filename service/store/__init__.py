"""The message store: SQLAlchemy models, the database, and the queries the routes and the training jobs use."""
