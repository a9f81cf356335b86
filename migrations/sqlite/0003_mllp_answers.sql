-- The answer oscarflow gave to each MLLP message (see migrations/mysql/0002_mllp_answers.sql).
CREATE TABLE IF NOT EXISTS oscarflow_mllp_answer (
  pipeline varchar(100) NOT NULL,
  sender varchar(255) NOT NULL,
  control_id varchar(199) NOT NULL,
  content_sha256 char(64) NOT NULL,
  code char(2) NOT NULL,
  reason varchar(40) NULL,
  answered_at datetime NOT NULL,
  PRIMARY KEY (pipeline, sender, control_id)
);
