-- Progress of polling sources (the RingCentral fax inbox keeps its message-store watermark
-- here), one row per pipeline and source.
CREATE TABLE IF NOT EXISTS oscarflow_checkpoint (
  pipeline varchar(100) NOT NULL,
  source varchar(100) NOT NULL,
  value varchar(255) NOT NULL,
  updated_at datetime NOT NULL,
  PRIMARY KEY (pipeline, source)
) DEFAULT CHARSET=utf8mb4;

-- Every inbound fax oscarflow took, by RingCentral message id: written in the transaction
-- that creates the OSCAR document (so a re-delivered fax writes nothing), or on its own when
-- the fax was dead-lettered (document_no NULL).
CREATE TABLE IF NOT EXISTS oscarflow_fax_inbound (
  message_id bigint NOT NULL,
  document_no int NULL,
  content_sha256 char(64) NOT NULL,
  pipeline varchar(100) NOT NULL,
  outcome varchar(20) NOT NULL,
  taken_at datetime NOT NULL,
  PRIMARY KEY (message_id)
) DEFAULT CHARSET=utf8mb4
