"""Datastore providers: embedded SQLite (default) and MongoDB (when a MONGO_URI is given)."""

from texium.core.datastore.base import INDEXES, Collection, Datastore, Index, is_valid_id, new_id


def open_datastore(mongo_uri: str | None, db_name: str, data_dir: str) -> Datastore:
    """SQLite in `data_dir` unless `mongo_uri` is set; `mongomock://` gives in-memory MongoDB."""
    if mongo_uri:
        from texium.core.datastore.mongo import MongoDatastore

        return MongoDatastore(mongo_uri, db_name)
    from texium.core.datastore.sqlite import SQLiteDatastore

    return SQLiteDatastore(data_dir)


__all__ = ["Collection", "Datastore", "Index", "INDEXES", "is_valid_id", "new_id", "open_datastore"]
