-- oscarflow's own tables in the OSCAR database (MySQL/MariaDB).
-- OSCAR's tables are not created here: they belong to OSCAR.

-- Dead letters: every rejected message with its original bytes, the stage and a bounded
-- reason code. `detail` is PHI-free by construction. `status` is open, redriven or resolved.
CREATE TABLE IF NOT EXISTS oscarflow_dead_letter (
  id varchar(26) NOT NULL,
  pipeline varchar(100) NOT NULL,
  source varchar(100) NOT NULL,
  source_kind varchar(50) NOT NULL,
  origin text NOT NULL,
  part int NULL,
  content_sha256 char(64) NOT NULL,
  stage varchar(100) NOT NULL,
  stage_kind varchar(50) NOT NULL,
  reason varchar(40) NOT NULL,
  error_kind varchar(12) NOT NULL,
  detail text NOT NULL,
  attempts int NOT NULL,
  status varchar(12) NOT NULL,
  received_at datetime NOT NULL,
  first_failed_at datetime NOT NULL,
  last_failed_at datetime NOT NULL,
  resolved_at datetime NULL,
  raw_len bigint NOT NULL,
  raw longblob NOT NULL,
  PRIMARY KEY (id),
  KEY oscarflow_dead_letter_status (pipeline, status),
  KEY oscarflow_dead_letter_sha (content_sha256)
) DEFAULT CHARSET=utf8mb4;

-- One row per imported lab file: our idempotency key (unique MD5, the same key OSCAR's
-- fileUploadCheck uses, but indexed and unique so that two writers cannot both import a
-- file) and the provenance of the import.
CREATE TABLE IF NOT EXISTS oscarflow_lab_import (
  md5sum char(32) NOT NULL PRIMARY KEY,
  file_upload_check_id int NOT NULL,
  pipeline varchar(100) NOT NULL,
  source varchar(100) NOT NULL,
  origin text NOT NULL,
  content_sha256 char(64) NOT NULL,
  messages int NOT NULL,
  lab_nos text NOT NULL,
  imported_at datetime NOT NULL
) DEFAULT CHARSET=utf8mb4;
