-- Outbound faxes oscarflow took from OSCAR's `faxes` queue (status WAITING on a line it
-- handles). The primary key is the claim: one row per OSCAR fax, inserted by exactly one
-- oscarflow process, which then owns the send. `rc_message_id` is RingCentral's message id
-- (OSCAR's `faxes.jobId` is a 32-bit int and cannot hold it). States: sending (claimed, not
-- yet accepted by RingCentral), unknown (the send broke off in transit and is looked up by
-- `ref_name` before any new attempt), queued (accepted, status polled), done, failed.
-- `claimed_unix` is the owner's heartbeat, `first_claimed_unix` the first claim: the
-- earliest moment the fax can have reached RingCentral (where a lookup starts). `sends`
-- counts how often OSCAR queued the fax (a user re-queues a sent or failed fax by setting
-- it WAITING again), and each send has its own reference.
CREATE TABLE IF NOT EXISTS oscarflow_fax_outbound (
  fax_id int NOT NULL,
  owner varchar(100) NOT NULL,
  state varchar(20) NOT NULL,
  ref_name varchar(100) NOT NULL,
  sends int NOT NULL,
  rc_message_id bigint NULL,
  attempts int NOT NULL,
  last_error varchar(255) NULL,
  claimed_unix bigint NOT NULL,
  first_claimed_unix bigint NOT NULL,
  updated_at datetime NOT NULL,
  PRIMARY KEY (fax_id),
  KEY oscarflow_fax_outbound_state (state)
) DEFAULT CHARSET=utf8mb4
