-- See migrations/mysql/0004_fax_outbound.sql.
CREATE TABLE IF NOT EXISTS oscarflow_fax_outbound (
  fax_id int NOT NULL PRIMARY KEY,
  owner varchar(100) NOT NULL,
  state varchar(20) NOT NULL,
  ref_name varchar(100) NOT NULL,
  sends int NOT NULL,
  rc_message_id bigint NULL,
  attempts int NOT NULL,
  last_error varchar(255) NULL,
  claimed_unix bigint NOT NULL,
  first_claimed_unix bigint NOT NULL,
  updated_at datetime NOT NULL
);

CREATE INDEX IF NOT EXISTS oscarflow_fax_outbound_state ON oscarflow_fax_outbound (state)
