-- The message journal: one row per thing that happened to a message or an input, committed
-- in the same transaction as what it records (the OSCAR rows of an import, a dead letter, a
-- document, a fax or text sent). Answers "did lab X arrive, and where did it go?" by
-- accession, control id or content hash, and gives the console its counts, which survive
-- restarts. Identifiers and codes only, never names, health numbers or birth dates.
-- kind: lab, fax_in, fax_out, sms.
-- outcome: imported, duplicate, dead_lettered, filed (a fax document), or what an outbound
-- sink did (sent, adopted, completed, failed, unknown, waiting).
-- released_at: when the source let go of the input (deleted the file, acknowledged the
-- batch), set after the commit.
-- Rows older than journal_retention (oscarflow.toml, 400 days by default) are pruned by the
-- daemon.
CREATE TABLE IF NOT EXISTS oscarflow_journal (
  id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
  at datetime NOT NULL,
  kind varchar(10) NOT NULL,
  pipeline varchar(100) NOT NULL,
  source varchar(100) NOT NULL,
  source_kind varchar(30) NOT NULL,
  origin varchar(500) NOT NULL,
  received_at datetime NOT NULL,
  attempt int NOT NULL,
  content_sha256 char(64) NOT NULL,
  part int NULL,
  message_type varchar(20) NULL,
  control_id varchar(100) NULL,
  accession varchar(255) NULL,
  lab_type varchar(20) NULL,
  outcome varchar(30) NOT NULL,
  match_outcome varchar(30) NULL,
  match_candidates int NULL,
  reason varchar(40) NULL,
  detail varchar(500) NULL,
  lab_no int NULL,
  document_no int NULL,
  fax_id int NULL,
  demographic_no int NULL,
  dead_letter_id varchar(26) NULL,
  released_at datetime NULL,
  KEY oscarflow_journal_at (at),
  KEY oscarflow_journal_pipeline_at (pipeline, at),
  KEY oscarflow_journal_accession (accession),
  KEY oscarflow_journal_control_id (control_id),
  KEY oscarflow_journal_sha (content_sha256),
  KEY oscarflow_journal_lab_no (lab_no)
) DEFAULT CHARSET=utf8mb4
