-- Scheduling messages (HL7 SIU) applied to OSCAR's appointment book (src/oscar/appointment.rs).
--
-- oscarflow_appointment: one row per appointment a feed booked, keyed by the feed's filler id
-- (SCH-2.1) under the other_id key it is kept with in OSCAR. It holds the appointment's state
-- as the feed last set it and the MSH-7 of that version, so versions apply in order and an
-- older one changes nothing. Written in the transaction that writes OSCAR's rows.
CREATE TABLE IF NOT EXISTS oscarflow_appointment (
  id bigint NOT NULL AUTO_INCREMENT,
  other_key varchar(30) NOT NULL,
  filler_id varchar(100) NOT NULL,
  appointment_no int NOT NULL,
  demographic_no int NOT NULL,
  state varchar(20) NOT NULL,
  message_time varchar(40) NOT NULL,
  pipeline varchar(100) NOT NULL,
  created_at datetime NOT NULL,
  updated_at datetime NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY oscarflow_appointment_filler (other_key, filler_id),
  KEY oscarflow_appointment_no (appointment_no)
) DEFAULT CHARSET=utf8mb4;

-- Every scheduling message applied or found to change nothing, by the SHA-256 of its bytes:
-- a re-delivered message, of any age, changes nothing.
CREATE TABLE IF NOT EXISTS oscarflow_appointment_message (
  sha256 char(64) NOT NULL,
  appointment_no int NULL,
  event varchar(3) NOT NULL,
  outcome varchar(20) NOT NULL,
  applied_at datetime NOT NULL,
  PRIMARY KEY (sha256)
) DEFAULT CHARSET=utf8mb4;

-- What the patient is told about: booked, rescheduled, cancelled. The text source
-- oscar_appointment_confirmations makes one text per row (dedupe key confirm:<id>), honouring
-- opt-outs, sending hours and number checks, then marks it texted.
CREATE TABLE IF NOT EXISTS oscarflow_appointment_event (
  id bigint NOT NULL AUTO_INCREMENT,
  appointment_no int NOT NULL,
  demographic_no int NOT NULL,
  event varchar(20) NOT NULL,
  starts_at datetime NULL,
  texted tinyint NOT NULL DEFAULT 0,
  created_at datetime NOT NULL,
  PRIMARY KEY (id),
  KEY oscarflow_appointment_event_texted (texted)
) DEFAULT CHARSET=utf8mb4;

-- One row per provider whose book a feed wrote: the row a booking locks first, so that two
-- writers of one provider's book (two daemons, two connections) check for conflicts one after
-- the other and never both book one slot. oscarflow's own table, so OSCAR's provider table
-- needs no UPDATE right.
CREATE TABLE IF NOT EXISTS oscarflow_provider_lock (
  provider_no varchar(6) NOT NULL,
  taken bigint NOT NULL,
  PRIMARY KEY (provider_no)
) DEFAULT CHARSET=utf8mb4;

-- The journal's rows of scheduling messages: kind `appointment` (longer than the kinds before
-- it) and the appointment's number.
ALTER TABLE oscarflow_journal MODIFY kind varchar(20) NOT NULL;
ALTER TABLE oscarflow_journal ADD COLUMN IF NOT EXISTS appointment_no int NULL;
