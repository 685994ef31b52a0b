"""The service's database: SQLAlchemy 2 models, engine/session handling and migrations."""
