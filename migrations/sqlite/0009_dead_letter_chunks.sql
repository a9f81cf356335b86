-- Dead letters of any size: bytes over 256 KiB are kept in chunks (see the MySQL migration
-- of the same name).
ALTER TABLE oscarflow_dead_letter ADD COLUMN raw_chunks INTEGER NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS oscarflow_dead_letter_chunk (
  dead_letter_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  bytes BLOB NOT NULL,
  PRIMARY KEY (dead_letter_id, seq)
);
