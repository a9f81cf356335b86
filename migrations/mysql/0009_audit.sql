-- The audit trail: one row per message oscarflow filed into OSCAR (naming every OSCAR row it
-- wrote, table by table), per status it changed in OSCAR's queues, and per time patient data
-- was shown to a person (who, and why). Written in the same transaction as the write it
-- records. Chart numbers and row keys only: never a name, health number or birth date.
--
-- Tamper-evident: rows form hash chains (one per pipeline, and `access` for reads). Each row's
-- `hash` is SHA-256 over its content and the previous row's hash, `seq` numbers a chain's rows
-- without gaps, and oscarflow_audit_head holds each chain's last seq and hash (the lock that
-- orders concurrent writers). `oscarflow audit verify` walks the chains.
--
-- The account needs only SELECT and INSERT here (deploy/oscarflow-grants.sql): rows are never
-- updated or deleted by oscarflow, and are kept as long as the database.
CREATE TABLE IF NOT EXISTS oscarflow_audit (
  id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
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
  written mediumtext NULL,
  why varchar(500) NULL,
  prev_hash char(64) NOT NULL,
  hash char(64) NOT NULL,
  UNIQUE KEY oscarflow_audit_chain_seq (chain, seq),
  KEY oscarflow_audit_at (at),
  KEY oscarflow_audit_demographic (demographic_no),
  KEY oscarflow_audit_pipeline (pipeline, at),
  KEY oscarflow_audit_lab_no (lab_no)
) DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS oscarflow_audit_head (
  chain varchar(100) NOT NULL PRIMARY KEY,
  seq bigint NOT NULL,
  hash char(64) NOT NULL
) DEFAULT CHARSET=utf8mb4;
