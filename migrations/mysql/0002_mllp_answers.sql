-- The answer oscarflow gave to each MLLP message, by sender and control id (MSH-3/4, MSH-10),
-- so that a peer re-sending a message (it missed our ACK) gets the same answer and the
-- message is not processed again. Written after the message settled (committed or
-- dead-lettered). The import itself is idempotent by the message MD5 as well.
CREATE TABLE IF NOT EXISTS oscarflow_mllp_answer (
  pipeline varchar(100) NOT NULL,
  sender varchar(255) NOT NULL,
  control_id varchar(199) NOT NULL,
  content_sha256 char(64) NOT NULL,
  code char(2) NOT NULL,
  reason varchar(40) NULL,
  answered_at datetime NOT NULL,
  PRIMARY KEY (pipeline, sender, control_id)
) DEFAULT CHARSET=utf8mb4;
