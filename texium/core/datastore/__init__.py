"""Datastore providers: embedded SQLite (default), PostgreSQL (when a DATABASE_URL is given) and
MongoDB (when a MONGO_URI is given)."""

from texium.core.datastore.base import INDEXES, Collection, Datastore, Index, is_valid_id, new_id


def open_datastore(
    mongo_uri: str | None, db_name: str, data_dir: str, database_url: str | None = None, pool_size: int = 10
) -> Datastore:
    """PostgreSQL at `database_url` when set, else MongoDB when `mongo_uri` is set (`mongomock://`
    gives in-memory MongoDB), else SQLite in `data_dir`."""
    if database_url:
        from texium.core.datastore.postgres import PostgresDatastore

        return PostgresDatastore(database_url, pool_size=pool_size)
    if mongo_uri:
        from texium.core.datastore.mongo import MongoDatastore

        return MongoDatastore(mongo_uri, db_name)
    from texium.core.datastore.sqlite import SQLiteDatastore

    return SQLiteDatastore(data_dir)


__all__ = ["Collection", "Datastore", "Index", "INDEXES", "is_valid_id", "new_id", "open_datastore"]
