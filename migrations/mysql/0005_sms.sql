-- Text messages oscarflow sends through RingCentral (appointment reminders, lab-ready
-- notices), one row per message. `dedupe_key` makes each producer idempotent: one reminder
-- per appointment (`reminder:<appointment_no>`), one lab notice per patient and day. States:
-- queued, sending (claimed by `owner`), unknown (the send broke off in transit and is looked
-- up before any new attempt), sent, delivered, failed (with `last_error`), skipped.
-- The row is the log of what was sent to whom. Phone numbers and texts stay in the clinic's
-- database and never reach oscarflow's logs.
CREATE TABLE IF NOT EXISTS oscarflow_sms_outbox (
  id bigint NOT NULL AUTO_INCREMENT,
  kind varchar(20) NOT NULL,
  dedupe_key varchar(191) NOT NULL,
  demographic_no int NULL,
  to_number varchar(20) NOT NULL,
  body varchar(1000) NOT NULL,
  state varchar(20) NOT NULL,
  owner varchar(100) NULL,
  rc_message_id bigint NULL,
  attempts int NOT NULL,
  last_error varchar(255) NULL,
  claimed_unix bigint NULL,
  first_claimed_unix bigint NULL,
  created_at datetime NOT NULL,
  updated_at datetime NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY oscarflow_sms_outbox_dedupe (dedupe_key),
  KEY oscarflow_sms_outbox_state (state)
) DEFAULT CHARSET=utf8mb4;

-- Patients who asked for no text messages (besides OSCAR's own demographicExt key, which
-- is configurable).
CREATE TABLE IF NOT EXISTS oscarflow_sms_optout (
  demographic_no int NOT NULL,
  reason varchar(100) NULL,
  created_at datetime NOT NULL,
  PRIMARY KEY (demographic_no)
) DEFAULT CHARSET=utf8mb4
