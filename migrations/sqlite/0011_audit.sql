-- The audit trail (see migrations/mysql/0009_audit.sql for what each column means).
CREATE TABLE IF NOT EXISTS oscarflow_audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  chain varchar(100) NOT NULL,
  seq bigint NOT NULL,
  at varchar(19) NOT NULL,
  action varchar(20) NOT NULL,
  actor varchar(200) NOT NULL,
  host varchar(100) NOT NULL,
  process varchar(100) NOT NULL,
  pipeline varchar(100) NULL,
  journal_id bigint NULL,
  content_sha256 char(64) NULL,
  part int NULL,
  demographic_no int NULL,
  lab_no int NULL,
  document_no int NULL,
  fax_id int NULL,
  appointment_no int NULL,
  written text NULL,
  why varchar(500) NULL,
  prev_hash char(64) NOT NULL,
  hash char(64) NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS oscarflow_audit_chain_seq ON oscarflow_audit (chain, seq);
CREATE INDEX IF NOT EXISTS oscarflow_audit_at ON oscarflow_audit (at);
CREATE INDEX IF NOT EXISTS oscarflow_audit_demographic ON oscarflow_audit (demographic_no);
CREATE INDEX IF NOT EXISTS oscarflow_audit_pipeline ON oscarflow_audit (pipeline, at);
CREATE INDEX IF NOT EXISTS oscarflow_audit_lab_no ON oscarflow_audit (lab_no);

CREATE TABLE IF NOT EXISTS oscarflow_audit_head (
  chain varchar(100) NOT NULL PRIMARY KEY,
  seq bigint NOT NULL,
  hash char(64) NOT NULL
);

-- OSCAR's own audit log (`log`, shown by its Security Log screen and each chart's audit
-- page), as the real schema declares it: the embedded database gets the rows OSCAR's upload
-- would write.
CREATE TABLE IF NOT EXISTS log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  dateTime datetime NOT NULL,
  provider_no varchar(10) DEFAULT NULL,
  action varchar(100) DEFAULT NULL,
  content varchar(80) DEFAULT NULL,
  contentId varchar(80) DEFAULT NULL,
  ip varchar(64) DEFAULT NULL,
  demographic_no int(10) DEFAULT NULL,
  data text DEFAULT NULL,
  securityId int(11) DEFAULT NULL
);
CREATE INDEX IF NOT EXISTS log_datetime ON log (dateTime, provider_no);
CREATE INDEX IF NOT EXISTS log_action ON log (action);
CREATE INDEX IF NOT EXISTS log_content ON log (content);
CREATE INDEX IF NOT EXISTS log_contentId ON log (contentId);
CREATE INDEX IF NOT EXISTS log_demographic_no ON log (demographic_no);
