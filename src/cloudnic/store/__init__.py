"""cloudnic.store: the SQLite state database, its schema and migrations, the intent journal.

This layer imports only :mod:`cloudnic.errors` and the standard library.
"""

from .db import Database
from .records import (
    ATTACHMENT_STATES,
    PORT_STATES,
    AttachmentRecord,
    JournalEntry,
    PortRecord,
    attachment_key,
)
from .schema import MIGRATIONS, SCHEMA_VERSION, Migration
from .standalone import SaAddressRow, SaPortRow, StandaloneTables
from .store import Store

__all__ = [
    "ATTACHMENT_STATES",
    "MIGRATIONS",
    "PORT_STATES",
    "SCHEMA_VERSION",
    "AttachmentRecord",
    "Database",
    "JournalEntry",
    "Migration",
    "PortRecord",
    "SaAddressRow",
    "SaPortRow",
    "StandaloneTables",
    "Store",
    "attachment_key",
]
