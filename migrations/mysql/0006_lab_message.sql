-- One row per lab oscarflow wrote into hl7TextMessage, committed with it: where it came from
-- (file MD5 and position), how it was typed, and the patient match with its reason. Answers
-- "which labs went unmatched today, and why" with one query (README, Operations).
-- match_outcome is one of: matched, no_health_number, invalid_birth_date, not_found,
-- birth_date_mismatch, sex_mismatch, name_mismatch, ambiguous. No PHI: ids and codes only.
CREATE TABLE IF NOT EXISTS oscarflow_lab_message (
  lab_no int NOT NULL PRIMARY KEY,
  md5sum char(32) NOT NULL,
  part int NOT NULL,
  pipeline varchar(100) NOT NULL,
  lab_type varchar(20) NOT NULL,
  typed_by varchar(20) NOT NULL,
  control_id varchar(100) NOT NULL,
  accession varchar(255) NOT NULL,
  match_outcome varchar(30) NOT NULL,
  match_candidates int NULL,
  demographic_no int NULL,
  imported_at datetime NOT NULL,
  KEY oscarflow_lab_message_time (imported_at),
  KEY oscarflow_lab_message_outcome (match_outcome, imported_at),
  KEY oscarflow_lab_message_md5 (md5sum)
) DEFAULT CHARSET=utf8mb4;
