-- The message journal (see the MySQL migration of the same name).
CREATE TABLE IF NOT EXISTS oscarflow_journal (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at TEXT NOT NULL,
  kind TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  source TEXT NOT NULL,
  source_kind TEXT NOT NULL,
  origin TEXT NOT NULL,
  received_at TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  content_sha256 TEXT NOT NULL,
  part INTEGER NULL,
  message_type TEXT NULL,
  control_id TEXT NULL,
  accession TEXT NULL,
  lab_type TEXT NULL,
  outcome TEXT NOT NULL,
  match_outcome TEXT NULL,
  match_candidates INTEGER NULL,
  reason TEXT NULL,
  detail TEXT NULL,
  lab_no INTEGER NULL,
  document_no INTEGER NULL,
  fax_id INTEGER NULL,
  demographic_no INTEGER NULL,
  dead_letter_id TEXT NULL,
  released_at TEXT NULL
);
CREATE INDEX IF NOT EXISTS oscarflow_journal_at ON oscarflow_journal (at);
CREATE INDEX IF NOT EXISTS oscarflow_journal_pipeline_at ON oscarflow_journal (pipeline, at);
CREATE INDEX IF NOT EXISTS oscarflow_journal_accession ON oscarflow_journal (accession);
CREATE INDEX IF NOT EXISTS oscarflow_journal_control_id ON oscarflow_journal (control_id);
CREATE INDEX IF NOT EXISTS oscarflow_journal_sha ON oscarflow_journal (content_sha256);
CREATE INDEX IF NOT EXISTS oscarflow_journal_lab_no ON oscarflow_journal (lab_no)
